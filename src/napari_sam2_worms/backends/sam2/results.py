"""SAM 2 logits -> a :class:`FrameResult`, resolved on the device, copied asynchronously.

Per frame, overlaps are resolved where the logits are (highest logit wins, as sam2's
``_apply_non_overlapping_constraints``) into one (H, W) index image: 0 = background,
``k + 1`` = ``ids[k]``; 1 byte per pixel whatever the number of objects. On CUDA the
image and the object scores are copied into pinned host memory without waiting;
:meth:`PendingResult.finish` waits for that copy only. Only imported with torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..base import FrameResult, LabelMasks


@dataclass
class PendingResult:
    """A frame's result on its way to the host (see :func:`launch_result`)."""

    frame: int
    ids: list[int]
    scored: list[int]  # ids that have a score, in the order of ``host_scores``
    host_index: torch.Tensor
    host_scores: torch.Tensor
    event: Any  # a torch.cuda.Event, or None when the copy was synchronous

    def finish(self) -> FrameResult:
        """Wait for the copy; the frame's :class:`FrameResult` (masks made on access)."""
        if self.event is not None:
            self.event.synchronize()
        index = self.host_index.numpy().copy()  # the pinned buffer goes back to torch
        by_id = dict(zip(self.scored, self.host_scores.tolist()))
        return FrameResult(
            self.frame,
            # FrameResult.masks may be a LabelMasks (see its docstring); typed as a dict
            LabelMasks(index, [int(o) for o in self.ids]),  # type: ignore[arg-type]
            {int(o): by_id.get(o, float("-inf")) for o in self.ids},
        )


def launch_result(
    frame: int, ids: list[int], video_res: torch.Tensor, scores: dict[int, Any]
) -> PendingResult:
    """Resolve ``video_res`` ((N, 1, H, W) logits of ``ids``) and start the host copy.

    ``scores`` maps ids to sam2's object-score logit tensors.
    """
    lg = video_res[:, 0]
    n = lg.shape[0]
    if n > 1:
        best, winner = lg.max(dim=0)
        index = torch.where(best > 0, winner + 1, 0)
    else:
        index = lg[0] > 0
    dtype = torch.uint8 if n < 255 else torch.int16 if n < 32767 else torch.int32
    index = index.to(dtype)
    scored = [o for o in ids if o in scores]
    score_t = (
        torch.cat([scores[o].reshape(-1)[:1].float() for o in scored])
        if scored
        else torch.zeros(0, device=lg.device)
    )
    if lg.device.type != "cuda":
        return PendingResult(frame, list(ids), scored, index.cpu(), score_t.cpu(), None)
    host_index = torch.empty(index.shape, dtype=dtype, pin_memory=True)
    host_scores = torch.empty(score_t.shape, dtype=torch.float32, pin_memory=True)
    host_index.copy_(index, non_blocking=True)
    host_scores.copy_(score_t, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return PendingResult(frame, list(ids), scored, host_index, host_scores, event)

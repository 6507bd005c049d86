"""An oracle backend for tests: it answers every prompt with ground truth.

It implements the same :class:`~napari_sam2_worms.backends.base.Backend` protocol as the
real backends so that tests can pin down the *semantics* of the session (which frames
are recomputed, which are kept, how overlaps and user edits are resolved). It is never
offered to users as a model and it says nothing about segmentation quality.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..backends.base import BadPromptError, FrameResult, ObjectPrompts

if TYPE_CHECKING:
    from collections.abc import Iterator


class OracleBackend:
    """Returns ground-truth masks for the ground-truth animals the prompts point at.

    An object's ground-truth animal is the label under its positive clicks (or the one
    covering most of its box, or the painted mask itself). Negative clicks remove the
    animal under them. ``propagated`` records every frame that :meth:`propagate`
    yielded, in order, so tests can check what was recomputed.

    Parameters
    ----------
    truth : (T, H, W) ground-truth label stack.
    """

    name = "oracle"

    def __init__(self, truth: np.ndarray) -> None:
        self.truth = np.asarray(truth)
        self.prompts: dict[tuple[int, int], ObjectPrompts] = {}
        self.propagated: list[int] = []
        self.prompt_calls: list[tuple[int, int]] = []
        self.video = None

    def open(self, video) -> None:
        """Take ``video``, which must have the ground truth's shape."""
        if tuple(video.shape[:3]) != self.truth.shape:
            raise ValueError("the oracle's ground truth does not match the video's shape")
        self.video = video

    def _animals(self, frame: int, p: ObjectPrompts) -> np.ndarray:
        """Ground-truth mask selected by prompts on ``frame``."""
        t = self.truth[frame]
        if p.mask is not None:
            return np.asarray(p.mask, bool)
        keep: set[int] = set()
        if p.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in p.box)
            ids, counts = np.unique(t[y0:y1, x0:x1], return_counts=True)
            counts = counts[ids > 0]
            ids = ids[ids > 0]
            if len(ids):
                keep.add(int(ids[np.argmax(counts)]))
        drop: set[int] = set()
        for (x, y), lab in zip(p.points, p.labels):
            r = min(max(int(round(y)), 0), t.shape[0] - 1)
            c = min(max(int(round(x)), 0), t.shape[1] - 1)
            gt = int(t[r, c])
            if lab == 1:
                if gt == 0:
                    raise BadPromptError(f"the point ({x:.1f}, {y:.1f}) is on empty background")
                keep.add(gt)
            elif gt:
                drop.add(gt)
        return np.isin(t, sorted(keep - drop)) if keep - drop else np.zeros(t.shape, bool)

    def _identity(self, object_id: int) -> int | None:
        """Return the ground-truth id this object tracks (from its earliest prompt)."""
        for f, o in sorted(self.prompts):
            if o != object_id:
                continue
            m = self._animals(f, self.prompts[(f, o)])
            ids, counts = np.unique(self.truth[f][m], return_counts=True)
            counts, ids = counts[ids > 0], ids[ids > 0]
            if len(ids):
                return int(ids[np.argmax(counts)])
        return None

    def _result(self, frame: int) -> FrameResult:
        masks, scores = {}, {}
        for obj in sorted({o for _, o in self.prompts}):
            p = self.prompts.get((frame, obj))
            if p is not None:
                masks[obj] = self._animals(frame, p)
            else:
                gt = self._identity(obj)
                masks[obj] = self.truth[frame] == gt if gt else np.zeros(self.truth.shape[1:], bool)
            scores[obj] = 10.0 if masks[obj].any() else -10.0
        return FrameResult(frame, masks, scores)

    def set_prompts(self, frame: int, object_id: int, prompts: ObjectPrompts) -> FrameResult:
        """Record the prompts and return the ground truth of the prompted objects."""
        self.prompt_calls.append((frame, object_id))
        if prompts.is_empty():
            self.prompts.pop((frame, object_id), None)
        else:
            self._animals(frame, prompts)  # validate before storing
            self.prompts[(frame, object_id)] = prompts
        return self._result(frame)

    def remove_object(self, object_id: int) -> None:
        """Forget the prompts of ``object_id``."""
        for key in [k for k in self.prompts if k[1] == object_id]:
            del self.prompts[key]

    def propagate(self, start: int, stop: int, reverse: bool = False) -> Iterator[FrameResult]:
        """Yield the ground truth of the prompted objects on each frame of the run."""
        step = -1 if reverse else 1
        for f in range(start, stop + step, step):
            self.propagated.append(f)
            yield self._result(f)

    def reset(self) -> None:
        """Forget every prompt."""
        self.prompts.clear()

    def close(self) -> None:
        """Do nothing (the oracle holds no resources)."""
        pass

"""The prompt encoder's constant answers, computed once instead of every frame.

On every tracked frame sam2's ``_forward_sam_heads`` runs its prompt encoder on a
dummy prompt (one padding point per object, no box, no mask) and recomputes the dense
positional encoding of the 64 x 64 feature grid. Both depend only on the number of
objects, the device and the autocast state, yet they cost ~30 small kernels and their
Python each frame: with one worm on a GPU, where the host thread launching work is the
limit, that is time off every frame. Same values, returned from a cache. Only imported
with torch.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import torch

from .state import require_state

if TYPE_CHECKING:
    from .state import AccelState


def cache_empty_prompts(predictor: Any, state: AccelState | None = None) -> None:
    """Wrap ``predictor._forward_sam_heads`` and its prompt encoder (idempotent).

    The cached tensors are only read downstream (the mask decoder concatenates and
    adds them into new tensors), so sharing them between frames is safe.

    Parameters
    ----------
    predictor : the sam2 video predictor.
    state : its :class:`~.state.AccelState` (default: the one on ``predictor``, made
        if none); the cache goes in ``state.prompt_cache``.
    """
    state = require_state(predictor) if state is None else state
    if state.prompt_cache is not None:
        return
    encoder = predictor.sam_prompt_encoder
    heads = predictor._forward_sam_heads
    encode = encoder.forward
    dense_pe = encoder.get_dense_pe
    local = threading.local()
    cache: dict[tuple, Any] = {}

    def context(device: torch.device) -> tuple:
        return (
            device,
            torch.is_autocast_enabled(device.type),
            torch.get_autocast_dtype(device.type),
            torch.is_inference_mode_enabled(),
        )

    def forward_sam_heads(*args: Any, **kwargs: Any) -> Any:
        # sam2 calls it with keywords; a positional call is passed through untouched
        local.empty = (
            not args[1:]
            and kwargs.get("point_inputs") is None
            and kwargs.get("mask_inputs") is None
        )
        try:
            return heads(*args, **kwargs)
        finally:
            local.empty = False

    def forward(points: Any, boxes: Any, masks: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not getattr(local, "empty", False) or boxes is not None or masks is not None:
            return encode(points, boxes, masks)
        key = ("empty", points[0].shape[0], *context(points[0].device))
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = encode(points, boxes, masks)
        return hit

    def get_dense_pe() -> torch.Tensor:
        key = ("dense_pe", *context(encoder.point_embeddings[0].weight.device))
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = dense_pe()
        return hit

    state.patches.set(predictor, "_forward_sam_heads", forward_sam_heads)
    state.patches.set(encoder, "forward", forward)
    state.patches.set(encoder, "get_dense_pe", get_dense_pe)
    state.prompt_cache = cache

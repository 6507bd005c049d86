"""What the SAM 2 backend sets on a predictor before using it.

The settings the adapter relies on (inference only, prompts as conditioning frames, no
memory clearing around inputs, no hole filling without sam2's CUDA extension), and the
speed-ups, installed in one call (:func:`.accel.install`, which knows their order).
Every step is idempotent, so a predictor shared by several backends is configured once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .accel.state import AccelOptions

if TYPE_CHECKING:
    from .accel.state import AccelState


def has_sam2_extension() -> bool:
    """Whether sam2's optional CUDA extension (hole filling) was built."""
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def configure_predictor(
    p: Any,
    device_type: str,
    *,
    fast_attention: bool | None = None,
    compile: bool | str = False,
    cuda_graphs: bool = True,
) -> AccelState:
    """Configure ``p`` for the backend (see the module docstring).

    Parameters
    ----------
    p : a sam2 ``SAM2VideoPredictor``.
    device_type : its device type (``"cuda"``, ``"cpu"``, ``"mps"``).
    fast_attention, compile, cuda_graphs : the speed-ups asked for
        (:meth:`.accel.AccelOptions.for_backend`: ``fast_attention`` None means on CUDA
        only, ``compile`` True means mode "default").

    Returns
    -------
    AccelState
        What the speed-ups installed (:func:`.accel.state_of` finds it later).

    Raises
    ------
    AccelOptionsError
        Options that exclude each other (a compile mode with CUDA graphs of its own
        together with ours) or an unknown compile mode.
    """
    options = AccelOptions.for_backend(
        device_type, fast_attention=fast_attention, compile=compile, cuda_graphs=cuda_graphs
    )
    from . import accel

    # inference only; and autocast caches bf16 copies of weights that require grad,
    # outside any CUDA-graph pool, freed when the block ends: a replayed graph would
    # read freed memory (torch's make_graphed_callables refuses that cache)
    p.requires_grad_(False)
    state = accel.install(p, options)
    if p.fill_hole_area > 0 and not has_sam2_extension():
        # sam2 would try (and fail) to import its CUDA extension on every frame and
        # then leave the masks as they are: skip the attempt, same masks
        p.fill_hole_area = 0
    p.add_all_frames_to_correct_as_cond = True
    p.clear_non_cond_mem_around_input = False
    return state

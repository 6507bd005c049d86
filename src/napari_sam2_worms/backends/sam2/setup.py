"""What the SAM 2 backend installs on a predictor before using it.

Settings the adapter relies on (inference only, prompts as conditioning frames, no
memory clearing around inputs) and the speed-ups of the GPU path, in the order they
must go on: the prompt cache, the memory assembly, the convolution layouts and kernels
and the fast memory attention replace forwards, which compilation and CUDA graphs then
wrap. Every step is
idempotent, so a predictor shared by several backends is configured once.
"""

from __future__ import annotations

from typing import Any


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
) -> None:
    """Configure ``p`` for the backend (see the module docstring).

    ``fast_attention`` None means: on CUDA only (the CPU's attention has no fast kernel
    for 64-wide values). ``compile`` True means mode "default", a string names the mode.
    """
    cuda = device_type == "cuda"
    # inference only; and autocast caches bf16 copies of weights that require grad,
    # outside any CUDA-graph pool, freed when the block ends: a replayed graph would
    # read freed memory (torch's make_graphed_callables refuses that cache)
    p.requires_grad_(False)
    from .accel.prompt_cache import cache_empty_prompts

    cache_empty_prompts(p)
    from .accel.memory import install_fast_memory_assembly

    install_fast_memory_assembly(p)
    if cuda:
        from .accel.convs import channels_last_depthwise, fused_mask_stages

        channels_last_depthwise(p.memory_encoder)
        fused_mask_stages(p.memory_encoder)
    if cuda if fast_attention is None else fast_attention:
        from .accel.memory_attention import install_fast_memory_attention

        install_fast_memory_attention(p)
    if compile and cuda:
        from .accel.compile import compile_predictor

        compile_predictor(p, "default" if compile is True else str(compile))
    if cuda_graphs and cuda:
        from .accel.graphs import graph_predictor

        graph_predictor(p)
    if p.fill_hole_area > 0 and not has_sam2_extension():
        # sam2 would try (and fail) to import its CUDA extension on every frame and
        # then leave the masks as they are: skip the attempt, same masks
        p.fill_hole_area = 0
    p.add_all_frames_to_correct_as_cond = True
    p.clear_non_cond_mem_around_input = False
    if not cuda:
        from .accel.memory_attention import float32_memory

        float32_memory(p)
    if device_type == "cpu":  # bf16 autocast, channels-last, threads where checks pass
        from .accel.cpu import configure_cpu

        configure_cpu(p)

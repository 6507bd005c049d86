"""``torch.compile`` for SAM 2's hot modules (CUDA only), and attention-kernel choice.

Profiling sam2 1.1.0 on an H100 (``benchmarks/sam2_profile.py``) shows where a
propagated frame spends its time: with one object the GPU idles while Python launches
~1,000 small kernels per frame; with many objects memory attention dominates, and
within it the element-wise work around the attention kernel (rotary encoding of the
keys in float32, casts, layer norms) costs more than the attention itself. Compiling
fuses that element-wise work and cuts launches.

What is compiled, and how (see :func:`compile_predictor`):

- image encoder: static shape (one 1024x1024 frame);
- memory attention: dynamic shapes (the number of memory frames and objects varies);
- memory encoder and mask decoder: compiled per batch size.

The prompt encoder is not compiled (the number of clicks varies). Clicks run the
compiled modules eagerly (:func:`eager`), so a click never waits for a compilation.
The first propagated frames are slow (compilation, tens of seconds); the compiled code
is reused for the life of the process.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from .state import COMPILE_MODES, AccelOptionsError, require_state, state_of

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .state import AccelState

log = logging.getLogger(__name__)

__all__ = ["COMPILE_MODES", "attention_kernels", "compile_predictor", "eager"]

#: the modules compiled, with torch.compile's ``dynamic`` for each (see the docstring)
COMPILED_MODULES = (
    ("image_encoder", False),
    ("memory_attention", True),
    ("memory_encoder", False),
    ("sam_mask_decoder", False),
)


def compile_predictor(
    predictor: Any, mode: str = "default", state: AccelState | None = None
) -> None:
    """Compile ``predictor``'s hot modules in place (idempotent).

    The predictor's class becomes sam2's ``SAM2VideoPredictorVOS`` (same behaviour; its
    methods clone module outputs so compiled graphs do not alias them), without
    running that class's own max-autotune compilation. The only class swap of the
    package; logged in ``state.patches`` like the compiled forwards.

    Parameters
    ----------
    predictor : the sam2 video predictor (on CUDA).
    mode : a torch.compile mode of :data:`COMPILE_MODES`.
    state : its :class:`~.state.AccelState` (default: the one on ``predictor``, made
        if none); ``state.compiled`` records the mode.

    Raises
    ------
    AccelOptionsError
        ``mode`` is not one of :data:`COMPILE_MODES`.
    """
    import torch
    from sam2.sam2_video_predictor import SAM2VideoPredictorVOS

    if mode not in COMPILE_MODES:
        raise AccelOptionsError(f"compile mode must be one of {COMPILE_MODES}, not {mode!r}")
    state = require_state(predictor) if state is None else state
    if state.compiled:
        return
    refused = state.refuse_compile(mode)
    if refused is not None:
        log.warning(refused)
        return
    # more distinct shapes (object counts) before dynamo gives up; AttributeError:
    # renamed in some torch versions
    with contextlib.suppress(AttributeError):
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 32)
    state.patches.set_class(predictor, SAM2VideoPredictorVOS)
    for name, dynamic in COMPILED_MODULES:
        module = getattr(predictor, name)
        compiled = torch.compile(module.forward, mode=mode, fullgraph=True, dynamic=dynamic)
        state.patches.set(module, "forward", compiled)
    state.compiled = mode
    log.info("SAM 2 modules compiled lazily (mode %s): the first frames will be slow", mode)


@contextlib.contextmanager
def eager(predictor: Any) -> Iterator[None]:
    """Run a compiled predictor's modules eagerly inside the block (no compilation)."""
    state = state_of(predictor)
    if state is None or not state.compiled:
        yield
        return
    import torch

    set_stance = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
    if set_stance is None:
        yield
        return
    with set_stance("force_eager"):
        yield


@contextlib.contextmanager
def attention_kernels(n_objects: int, device: Any) -> Iterator[None]:
    """Prefer the attention kernel that is fastest for ``n_objects`` on CUDA.

    Measured on an H100 with sam2's cross-attention shape (4096 queries, ~28,700 keys,
    head dim 256, bf16): with 1 object FlashAttention takes 0.39 ms and cuDNN 0.67 ms;
    with 10 objects cuDNN takes 2.0 ms and FlashAttention 3.9 ms. Every backend computes
    the same attention (up to bf16 rounding).
    """
    if getattr(device, "type", str(device)) != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.CUDNN_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.MATH,
    ]
    if n_objects > 2:
        order[0], order[1] = order[1], order[0]
    ctx: contextlib.AbstractContextManager[Any]
    try:
        ctx = sdpa_kernel(order, set_priority=True)
    except TypeError:  # torch < 2.6: no priorities
        ctx = contextlib.nullcontext()
    with ctx:
        yield

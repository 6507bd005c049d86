"""Speed-ups installed on a sam2 video predictor: one explicit install, one uninstall.

Each module replaces (or wraps) the forward of one sam2 module, and is named after it:

- :mod:`.prompt_cache`: the prompt encoder's constant answers (``PromptEncoder``);
- :mod:`.memory`: the memory-bank assembly (``SAM2Base._prepare_memory_conditioned_features``);
- :mod:`.convs`: the memory encoder's depthwise convolutions and mask-downsampler stages;
- :mod:`.memory_attention`: the fast exact ``MemoryAttention.forward``, with
  :mod:`.triton_kernels` (its Triton kernels, imported only where Triton runs) and
  :mod:`.rope` (the rotary encoding both compute);
- :mod:`.compile`: ``torch.compile`` of the hot modules (the only class change:
  ``SAM2VideoPredictor`` -> sam2's ``SAM2VideoPredictorVOS``);
- :mod:`.graphs`: CUDA graphs of the hot modules' forwards;
- :mod:`.cpu`: bf16, channels-last and threads on the CPU.

:func:`install` puts them on in the one order that works (the forwards are replaced
first; compilation and CUDA graphs then wrap them) and returns the predictor's single
:class:`~.state.AccelState` (``predictor._nsw_accel``): what is installed, the caches,
sam2's methods the fast paths fall back to, and the log of every change
(:class:`~.patches.Patches`) that :func:`uninstall` undoes. The rule that
``torch.compile``'s own CUDA graphs and ours exclude each other is checked when the
:class:`~.state.AccelOptions` are made. The modules import :mod:`.state`,
:mod:`.patches` and :mod:`.rope` (the rotary encoding), never each other, except
that :mod:`.memory_attention` and :mod:`.convs` import :mod:`.triton_kernels` (lazily,
where Triton runs): no import cycle. This package imports no torch.
"""

from __future__ import annotations

import logging
from typing import Any

from .state import (
    COMPILE_MODES,
    STATE_ATTR,
    AccelOptions,
    AccelOptionsError,
    AccelState,
    graphs_conflict,
    state_of,
)

log = logging.getLogger(__name__)

__all__ = [
    "COMPILE_MODES",
    "AccelOptions",
    "AccelOptionsError",
    "AccelState",
    "graphs_conflict",
    "install",
    "state_of",
    "uninstall",
]


def install(predictor: Any, options: AccelOptions) -> AccelState:
    """Install the speed-ups ``options`` asks for on ``predictor`` (idempotent).

    Order: the prompt cache and the memory assembly (every device); on CUDA the
    convolution layouts and fused stages; the fast memory attention (CUDA by default);
    on CUDA compilation, then CUDA graphs (both wrap the forwards installed before);
    off CUDA the float32 memory; on the CPU the CPU speed-ups. A second call (a
    predictor shared by several backends) adds only what is not installed yet; a step
    the first call's choices exclude is skipped with a log line, as before.

    Parameters
    ----------
    predictor : a sam2 ``SAM2VideoPredictor``, on the device ``options`` names.
    options : what to install (validated when made).

    Returns
    -------
    AccelState
        The predictor's state (also ``predictor._nsw_accel``, :func:`state_of`).
    """
    state = state_of(predictor)
    if state is None:
        state = AccelState(options)
        setattr(predictor, STATE_ATTR, state)
    from .memory import install_fast_memory_assembly
    from .prompt_cache import cache_empty_prompts

    cache_empty_prompts(predictor, state)
    install_fast_memory_assembly(predictor, state)
    if options.cuda:
        from .convs import channels_last_depthwise, fused_mask_stages

        state.depthwise_convs += channels_last_depthwise(predictor.memory_encoder, state.patches)
        state.fused_mask_stages += fused_mask_stages(predictor.memory_encoder, state.patches)
    if options.wants_fast_attention:
        from .memory_attention import install_fast_memory_attention

        install_fast_memory_attention(predictor, state)
    if options.compile is not None and options.cuda:
        from .compile import compile_predictor

        compile_predictor(predictor, options.compile, state)
    if options.cuda_graphs and options.cuda:
        from .graphs import graph_predictor

        graph_predictor(predictor, state=state)
    if not options.cuda:
        from .memory_attention import float32_memory

        float32_memory(predictor, state)
    if options.device_type == "cpu" and options.cpu:
        from .cpu import configure_cpu

        configure_cpu(predictor)
    return state


def uninstall(predictor: Any) -> AccelState | None:
    """Undo every speed-up on ``predictor``: class, forwards, weights' layouts, caches.

    Afterwards the predictor is sam2's again, as it was before :func:`install`
    (process-wide settings stay: torch's thread count and dynamo's cache size).

    Parameters
    ----------
    predictor : a predictor :func:`install` configured (anything else: no-op).

    Returns
    -------
    AccelState or None
        The state that was removed (its caches emptied), or None when there was none.
    """
    state = state_of(predictor)
    if state is None:
        return None
    if state.cpu is not None:
        from .cpu import restore_cpu

        restore_cpu(predictor, state)
    for graphed in state.graphs or []:
        graphed.reset()  # their memory pool goes with them
    n = state.patches.undo()
    delattr(predictor, STATE_ATTR)
    if state.prompt_cache is not None:
        state.prompt_cache.clear()
    if state.fast_memory is not None:
        state.fast_memory.pos_cache.clear()
    log.info("SAM 2 speed-ups removed (%d changes undone)", n)
    return state

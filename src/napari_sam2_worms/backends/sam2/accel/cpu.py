"""SAM 2 on the CPU: bf16 where it keeps the masks, fused layer norms, layouts, threads.

Each speed-up goes on only where a check at configuration time shows that it runs,
gives the same numbers within tolerance and (for bf16) is faster; a check that fails
turns its speed-up off with a one-line notice, and SAM 2 runs as before (float32,
sam2's own layouts). Everything here is for ``device.type == "cpu"``: CUDA has its own
path (:mod:`..setup`, the other accel modules) and Apple's MPS keeps float32 and
sam2's layouts (the same device-agnostic code as the CPU without these speed-ups; not
testable here). The speed-ups, by name (:data:`SPEEDUPS`):

- ``bf16_attention`` (on where the CPU computes bf16 natively): the memory attention's
  matrix products (projections, the attention itself, the MLP) in bfloat16 with
  float32 accumulation, its layer norms, softmax and residual sums in float32, its
  output float32. At a 1024 px input the memory attention attends 4,096 queries to
  ~28,700 memory tokens per object and layer, ~40 % of a frame's float32 time; AMX
  runs the bf16 attention ~4x faster (:func:`check_bf16_attention`); 5.0 -> 3.1 CPU s
  a frame for 2 worms here (docs/sam2_cpu.md).
- ``bf16_encoder`` (on where the CPU computes bf16 natively): the image encoder (Hiera
  and its FPN) under bf16 autocast with its linears' weights in bf16, its outputs
  float32; the prompt encoder, mask decoder and memory encoder stay float32. ~40 %
  less of the encoder's CPU time at 1024.
- ``layer_norm``: sam2's ``LayerNorm2d`` (the memory encoder, the mask decoder's
  upscaling) as one fused ``layer_norm`` over the channels instead of eight passes;
  same function (float32), another summation order. Much faster in channels-last.
- ``channels_last``: the convolution weights and inputs in NHWC, oneDNN's preferred
  layout; checked on one convolution of the model.
- ``bf16`` (off; ``NAPARI_SAM2_WORMS_CPU_BF16=1``, :data:`BF16_ENV`): the whole model
  under bf16 autocast, the mask decoder and memory encoder too, as SAM 2 runs on a GPU.
  ``NAPARI_SAM2_WORMS_CPU_BF16=0`` turns every bf16 speed-up off (float32 throughout).

Native bf16 means AVX-512 BF16 or AMX (``/proc/cpuinfo`` flags ``avx512_bf16`` /
``amx_bf16``) and oneDNN's own check; a CPU without them emulates bf16, slower than
float32, and keeps float32. Also, always: PyTorch's thread pool cut to the cores this
process may use (:func:`set_threads`) and Hiera's positional embedding made once per
input size (:func:`cache_pos_embed`). The caches of the GPU path (the prompt encoder's
constant answers, the memory bank's positional part) are installed on every device by
:func:`..install`.

The bf16 pieces are in :mod:`.cpu_bf16`, the replaced forwards' bookkeeping in
:mod:`.forwards`. What is on lives in the predictor's :class:`~.state.AccelState` (``cpu``, and
``cpu_wanted`` for choices made by :func:`configure_cpu`); what each change replaced
is kept in this module (weak references to sam2's modules) and put back by
:func:`restore_cpu`. Only imported with torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .cpu_bf16 import (
    BF16_PARTS,
    _bf16_linears,
    check_bf16,
    check_bf16_attention,
    set_bf16_attention,
    set_bf16_part,
    set_bf16_weights,
)
from .forwards import _forwards, _replace_forward, _weak
from .state import require_state, state_of

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)


#: the environment variable for bf16 on the CPU: "1" puts the whole model under bf16
#: (where its check passes), "0" keeps float32 throughout, unset: the partial bf16
#: speed-ups (attention, encoder) where their checks pass
BF16_ENV = "NAPARI_SAM2_WORMS_CPU_BF16"

#: the CPU speed-ups :func:`configure_cpu` switches, in the order they go on
SPEEDUPS = (
    "channels_last",
    "layer_norm",
    "bf16_attention",
    "bf16_encoder",
    "bf16",
)

#: the partial bf16 speed-ups on by default (where their check passes, the environment
#: variable unset): those whose masks stayed closest to float32's (docs/sam2_cpu.md)
BF16_DEFAULT = ("bf16_attention", "bf16_encoder")

#: what was decided, per process (the checks do not depend on the model)
_checks: dict[str, bool] = {}

#: Hiera trunks whose positional embedding is cached: the cache (:func:`cache_pos_embed`)
_pos_caches: weakref.WeakKeyDictionary[torch.nn.Module, dict] = weakref.WeakKeyDictionary()


def _is_conv(m: torch.nn.Module) -> bool:
    return isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))


def check_channels_last(module: torch.nn.Module) -> bool:
    """Check that one convolution of ``module`` gives the same output in channels-last."""
    conv = next((m for m in module.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if conv is None:
        return False
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, conv.in_channels, 32, 32, generator=g)
    w = conv.weight.detach().float()
    bias = None if conv.bias is None else conv.bias.detach().float()

    def run(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        pad: Any = conv.padding  # a tuple or "same" / "valid": conv2d takes both
        return F.conv2d(x, w, bias, conv.stride, pad, conv.dilation, conv.groups)

    with torch.inference_mode():
        ref = run(x, w)
        cl = torch.channels_last
        out = run(x.contiguous(memory_format=cl), w.contiguous(memory_format=cl))
    scale = float(ref.abs().max()) or 1.0
    ok = bool(torch.isfinite(out).all()) and float((out - ref).abs().max()) <= 1e-4 * scale
    if not ok:
        log.warning("SAM 2 on the CPU: channels-last convolutions differ, sam2's layout kept")
    return ok


def _cl_forward(conv: torch.nn.Module, inner: Callable, x: torch.Tensor) -> torch.Tensor:
    return inner(x.contiguous(memory_format=torch.channels_last))


def set_channels_last(module: torch.nn.Module, on: bool = True) -> int:
    """Put every convolution under ``module`` in channels-last layout, or back in sam2's.

    Parameters
    ----------
    module : the module whose ``Conv2d`` / ``ConvTranspose2d`` change.
    on : channels-last (weights and inputs) or sam2's contiguous layout.

    Returns
    -------
    int
        How many convolutions changed (idempotent).
    """
    n = 0
    for conv in module.modules():
        if not _is_conv(conv):
            continue
        forward = _weak(conv, _cl_forward) if on else None
        if on and "forward" in conv.__dict__ and "channels_last" not in _forwards.get(conv, {}):
            continue  # another speed-up's forward (the CUDA path's depthwise convs)
        if not _replace_forward(conv, "channels_last", forward):
            continue
        fmt = torch.channels_last if on else torch.contiguous_format
        weight: Any = conv.weight
        with torch.no_grad():
            weight.data = weight.data.contiguous(memory_format=fmt)
        n += 1
    return n


def _layer_norm_2d(norm: Any, inner: Callable, x: torch.Tensor) -> torch.Tensor:
    """sam2's ``LayerNorm2d`` (over the channels of NCHW) as one fused ``layer_norm``."""
    y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), norm.weight, norm.bias, norm.eps)
    return y.permute(0, 3, 1, 2)


def check_layer_norm() -> bool:
    """Check that the fused layer norm equals sam2's ``LayerNorm2d`` within 1e-4."""
    from sam2.modeling.sam2_utils import LayerNorm2d

    g = torch.Generator().manual_seed(0)
    norm: Any = LayerNorm2d(16)
    with torch.no_grad():
        norm.weight.normal_(generator=g)
        norm.bias.normal_(generator=g)
    x = 3 * torch.randn(2, 16, 24, 24, generator=g) + 1
    with torch.inference_mode():
        ref = norm(x)
        outs = [
            _layer_norm_2d(norm, norm.forward, y)
            for y in (x, x.contiguous(memory_format=torch.channels_last))
        ]
    ok = all(float((o - ref).abs().max()) <= 1e-4 * float(ref.abs().max()) for o in outs)
    if not ok:
        log.warning("SAM 2 on the CPU: the fused layer norm differs, sam2's kept")
    return ok


def set_layer_norm(module: torch.nn.Module, on: bool = True) -> int:
    """Give every sam2 ``LayerNorm2d`` under ``module`` the fused forward, or sam2's again.

    Parameters
    ----------
    module : the module whose ``LayerNorm2d`` change (modules of other classes, and
        norms whose forward another speed-up replaced, are left alone).
    on : the fused forward or sam2's.

    Returns
    -------
    int
        How many norms changed (idempotent).
    """
    from sam2.modeling.sam2_utils import LayerNorm2d

    n = 0
    for norm in module.modules():
        if type(norm) is not LayerNorm2d:
            continue
        if on and "forward" in norm.__dict__ and "layer_norm" not in _forwards.get(norm, {}):
            continue
        n += _replace_forward(norm, "layer_norm", _weak(norm, _layer_norm_2d) if on else None)
    return n


def cache_pos_embed(trunk: Any) -> bool:
    """Make Hiera's positional embedding once per feature size, not every frame.

    sam2 interpolates its learnt embedding to the feature grid (bicubic) and adds the
    tiled window embedding on every image it encodes; both depend only on the weights
    and the input size. Same tensor, from a cache keyed by the size, the device and
    the inference-mode state. Reads the weights when first asked for a size: the
    weights must not change afterwards (inference only). Idempotent.

    Parameters
    ----------
    trunk : sam2's Hiera trunk (``image_encoder.trunk``).

    Returns
    -------
    bool
        False for a trunk without sam2's ``_get_pos_embed``.
    """
    if trunk in _pos_caches:
        return True
    compute = getattr(trunk, "_get_pos_embed", None)
    if compute is None:
        return False
    cache: dict[tuple, torch.Tensor] = {}

    def get_pos_embed(hw: tuple[int, int]) -> torch.Tensor:
        key = (tuple(int(v) for v in hw), trunk.pos_embed.device, torch.is_inference_mode_enabled())
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = compute(hw)
        return hit

    trunk._get_pos_embed = get_pos_embed
    _pos_caches[trunk] = cache
    return True


def uncache_pos_embed(trunk: Any) -> bool:
    """Undo :func:`cache_pos_embed` (sam2's method again); returns whether it was on."""
    if _pos_caches.pop(trunk, None) is None:
        return False
    trunk.__dict__.pop("_get_pos_embed", None)
    return True


def usable_threads() -> int:
    """Count the cores this process may run on: affinity, capped by a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:  # cgroup v2: "max 100000" or "200000 100000"
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def set_threads() -> int:
    """Cut PyTorch's thread pool to :func:`usable_threads` unless the environment set it.

    Returns
    -------
    int
        The number of threads PyTorch uses now.
    """
    if any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        return torch.get_num_threads()
    n = usable_threads()
    if torch.get_num_threads() > n:
        log.info("SAM 2 on the CPU: %d threads (the cores this process may use)", n)
        torch.set_num_threads(n)
    return torch.get_num_threads()


def bf16_setting() -> bool | None:
    """Read :data:`BF16_ENV`: True (whole model), False (float32 only), None (unset)."""
    value = os.environ.get(BF16_ENV, "").strip().lower()
    if value in ("1", "on", "true", "yes", "auto"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    return None


def bf16_requested() -> bool:
    """Tell whether the environment asks for the whole model in bf16 (:data:`BF16_ENV`)."""
    return bf16_setting() is True


def _check(name: str, fn: Callable[..., Any], *args: Any) -> bool:
    """Run check ``name`` once per process; an exception turns the speed-up off."""
    if name in _checks:
        return _checks[name]
    try:
        ok = bool(fn(*args))
    except Exception as exc:  # a kernel missing in this build, ...
        log.warning("SAM 2 on the CPU: %s off (its check failed: %s)", name, exc)
        ok = False
    _checks[name] = ok
    return ok


def _decide(name: str, wanted: bool | None, predictor: Any) -> bool:
    """Decide whether speed-up ``name`` goes on.

    As ``wanted``; where that is None, as the environment and the speed-up's check say.
    """
    if wanted is not None:
        return bool(wanted)
    env = bf16_setting()
    if name == "bf16":
        return env is True and _check("bf16", check_bf16)
    if name.startswith("bf16"):
        if env is False or name not in BF16_DEFAULT:
            return False
        if name == "bf16_attention":
            return _check(name, check_bf16_attention)
        return _check("bf16", check_bf16)
    if name == "layer_norm":
        return _check(name, check_layer_norm)
    return _check(name, check_channels_last, predictor)


def configure_cpu(predictor: Any, **speedups: bool | None) -> dict[str, bool]:
    """Switch the CPU speed-ups on ``predictor`` (a model on the CPU).

    A choice given here sticks to the predictor (a backend opening a video configures
    it again with no choice): benchmarks and tests compare both ways on one model.

    Parameters
    ----------
    predictor : a sam2 video predictor on the CPU.
    **speedups : a name of :data:`SPEEDUPS` -> True (on), False (off) or None (as
        chosen before on this predictor, else where the environment and its check
        allow).

    Returns
    -------
    dict
        Each name of :data:`SPEEDUPS` -> whether it is on (also the predictor's
        ``AccelState.cpu``).

    Raises
    ------
    TypeError
        For a name that is not a CPU speed-up.
    """
    unknown = set(speedups) - set(SPEEDUPS)
    if unknown:
        raise TypeError(f"unknown CPU speed-up(s) {', '.join(sorted(unknown))}: use {SPEEDUPS}")
    state = require_state(predictor)
    set_threads()
    cache_pos_embed(predictor.image_encoder.trunk)
    state.cpu_wanted = {
        **state.cpu_wanted,
        **{k: bool(v) for k, v in speedups.items() if v is not None},
    }
    on = {name: _decide(name, state.cpu_wanted.get(name), predictor) for name in SPEEDUPS}
    set_channels_last(predictor, on["channels_last"])
    set_layer_norm(predictor, on["layer_norm"])
    set_bf16_attention(predictor, on["bf16_attention"] and not on["bf16"])
    for key in BF16_PARTS:
        set_bf16_part(predictor, key, on[key] and not on["bf16"])
    _bf16_linears(predictor, on)
    state.cpu = on
    return on


def restore_cpu(predictor: Any, state: Any = None) -> None:
    """Undo every CPU speed-up on ``predictor``: forwards, weights, layouts, caches.

    Parameters
    ----------
    predictor : a predictor :func:`configure_cpu` changed (anything else: no-op).
    state : its ``AccelState`` (default: the predictor's); its ``cpu`` and
        ``cpu_wanted`` are cleared.
    """
    set_bf16_attention(predictor, False)
    for key in BF16_PARTS:
        set_bf16_part(predictor, key, False)
    set_bf16_weights(predictor, False)
    set_layer_norm(predictor, False)
    set_channels_last(predictor, False)
    uncache_pos_embed(predictor.image_encoder.trunk)
    if state is None:
        state = require_state(predictor)
    state.cpu = None
    state.cpu_wanted = {}


def autocast(predictor: Any, device: torch.device) -> contextlib.AbstractContextManager:
    """Return the autocast block for ``predictor`` on ``device``.

    Parameters
    ----------
    predictor : the sam2 predictor.
    device : where it runs.

    Returns
    -------
    contextlib.AbstractContextManager
        bf16 autocast on CUDA (the GPU path) and on a CPU where :func:`configure_cpu`
        put the whole model under bf16; else none (the partial bf16 speed-ups enter
        their own autocast).
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    state = state_of(predictor)
    if device.type == "cpu" and state is not None and (state.cpu or {}).get("bf16"):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()

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

What is on lives in the predictor's :class:`~.state.AccelState` (``cpu``, and
``cpu_wanted`` for choices made by :func:`configure_cpu`); what each change replaced
is kept in this module (weak references to sam2's modules) and put back by
:func:`restore_cpu`. Only imported with torch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import weakref
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .state import require_state, state_of

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

#: the flags of a CPU that computes bfloat16 natively
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: relative error a bf16 check may show (bf16 keeps 8 bits of mantissa: ~0.4 % a value)
BF16_TOLERANCE = 2e-2
#: bf16 must take at most this share of float32's time in the check to be used
BF16_MAX_TIME_RATIO = 0.8

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

#: the float32 parameters of each linear kept in bf16 (:func:`set_bf16_weights`)
_fp32: weakref.WeakKeyDictionary[torch.nn.Module, list[torch.Tensor]] = weakref.WeakKeyDictionary()
#: per module, per speed-up: the instance ``forward`` it replaced (None: the class's)
_forwards: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()
#: Hiera trunks whose positional embedding is cached: the cache (:func:`cache_pos_embed`)
_pos_caches: weakref.WeakKeyDictionary[torch.nn.Module, dict] = weakref.WeakKeyDictionary()


def cpu_flags() -> set[str]:
    """Read the CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> bool:
    """Tell whether this CPU computes bfloat16 natively and PyTorch's oneDNN can use it."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    flags = cpu_flags()
    if flags:
        return any(f in flags for f in BF16_CPU_FLAGS)
    # no /proc/cpuinfo (macOS, Windows): trust PyTorch's capability only for AVX-512
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def _timed(fn: Callable[..., Any], *args: Any) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def _faster(name: str, fn: Callable[..., Any], fp32: tuple, bf16: tuple) -> bool:
    """Tell whether ``fn`` on bf16 arguments is faster enough than on float32 ones.

    At most :data:`BF16_MAX_TIME_RATIO` of the float32 time, best of 5 each,
    interleaved (a loaded machine slows both alike).
    """
    t32 = t16 = float("inf")
    with torch.inference_mode():
        for _ in range(5):
            t32 = min(t32, _timed(fn, *fp32))
            t16 = min(t16, _timed(fn, *bf16))
    if t16 > BF16_MAX_TIME_RATIO * t32:
        log.info(
            "SAM 2 on the CPU: bf16 %s is not faster here (%.1f vs %.1f ms), float32 kept",
            name,
            1e3 * t16,
            1e3 * t32,
        )
        return False
    log.info("SAM 2 on the CPU: bf16 %s (%.1fx faster than float32)", name, t32 / t16)
    return True


def _close(name: str, out: torch.Tensor, ref: torch.Tensor) -> bool:
    """Whether ``out`` is finite and within :data:`BF16_TOLERANCE` of ``ref`` (norms)."""
    err = float((out.float() - ref).norm() / ref.norm())
    if not bool(torch.isfinite(out).all()) or err > BF16_TOLERANCE:
        log.warning(
            "SAM 2 on the CPU: bf16 %s gave wrong numbers (error %.3g), float32 kept", name, err
        )
        return False
    return True


def check_bf16() -> bool:
    """Check bf16 matrix products: native, right under autocast, faster than float32.

    Returns
    -------
    bool
        True where the CPU computes bf16 natively, a 1024x768x768 product under bf16
        autocast is within :data:`BF16_TOLERANCE` of float32's and the bf16 product
        takes at most :data:`BF16_MAX_TIME_RATIO` of float32's time (an emulated bf16
        is slower, AMX's ~10x faster).
    """
    if not native_bf16():
        log.info("SAM 2 on the CPU: no native bf16 on this CPU, float32 kept")
        return False
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1024, 768, generator=g)
    w = torch.randn(768, 768, generator=g) / 768**0.5
    with torch.inference_mode():
        ref = F.linear(a, w)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = F.linear(a, w)
    if not _close("matrix products", out, ref):
        return False
    return _faster("matrix products", F.linear, (a, w), (a.bfloat16(), w.bfloat16()))


def check_bf16_attention() -> bool:
    """Check bf16 attention: native, within tolerance of float32, faster.

    One head of 256 channels, 1,024 queries and 4,096 keys (the memory attention's
    shape at a 512 px input): ``scaled_dot_product_attention`` on bf16 inputs (the CPU
    flash kernel accumulates in float32) against float32's.

    Returns
    -------
    bool
        True where bf16 is native, the output within :data:`BF16_TOLERANCE` and faster
        by :data:`BF16_MAX_TIME_RATIO`.
    """
    if not native_bf16():
        log.info("SAM 2 on the CPU: no native bf16 on this CPU, float32 attention kept")
        return False
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, n, 256, generator=g) for n in (1024, 4096, 4096))
    k = k / 4  # softmax neither uniform nor one-hot
    sdpa = F.scaled_dot_product_attention
    with torch.inference_mode():
        ref = sdpa(q, k, v)
        out = sdpa(q.bfloat16(), k.bfloat16(), v.bfloat16())
    if not _close("attention", out, ref):
        return False
    return _faster("attention", sdpa, (q, k, v), (q.bfloat16(), k.bfloat16(), v.bfloat16()))


def set_bf16_weights(module: torch.nn.Module, on: bool = True) -> int:
    """Keep every ``Linear``'s weight and bias under ``module`` in bf16, or float32 again.

    Autocast would cast them on every call (no cache for weights that need no
    gradient), and on the CPU a cast costs more than the bf16 product: 44 -> 16 ms for
    a 1024x768x768 linear here. Same numbers (autocast rounds them alike). The linears
    must then run under bf16 autocast.

    Parameters
    ----------
    module : the module whose linears change.
    on : bf16 (the float32 tensors kept aside) or back to those float32 tensors.

    Returns
    -------
    int
        How many linears changed (0 when they already were as asked: idempotent).
    """
    n = 0
    for lin in module.modules():
        if not isinstance(lin, torch.nn.Linear) or on == (lin in _fp32):
            continue
        params = [q for q in (lin.weight, lin.bias) if q is not None]
        if on:
            _fp32[lin] = [q.data for q in params]
            for q in params:
                q.data = q.data.to(torch.bfloat16)
        else:
            for q, data in zip(params, _fp32.pop(lin)):
                q.data = data
        n += 1
    return n


def _replace_forward(module: torch.nn.Module, key: str, forward: Callable | None) -> bool:
    """Give ``module`` the instance forward ``forward`` for speed-up ``key``.

    ``forward`` None puts back what the speed-up replaced. Returns whether anything
    changed.
    """
    mine = _forwards.setdefault(module, {})
    if forward is None:
        if key not in mine:
            return False
        old = mine.pop(key)
        if old is None:
            module.__dict__.pop("forward", None)
        else:
            module.forward = old
        if not mine:
            del _forwards[module]
        return True
    if key in mine:
        return False
    mine[key] = module.__dict__.get("forward")
    module.forward = forward
    return True


def _weak(module: torch.nn.Module, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(module, ...)`` through a weak reference (no module -> forward -> module cycle)."""
    ref = weakref.ref(module)
    before = module.__dict__.get("forward")
    cls_forward = type(module).forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        m = ref()
        inner = before if before is not None else cls_forward.__get__(m)
        return fn(m, inner, *args, **kwargs)

    return forward


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


def _to_float(out: Any) -> Any:
    """Cast the floating tensors in ``out`` (a tensor, list, tuple or dict) to float32."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):
        return {k: _to_float(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float(v) for v in out)
    return out


def _bf16_block(module: torch.nn.Module, inner: Callable, *args: Any, **kwargs: Any) -> Any:
    """``inner`` under bf16 autocast, its outputs float32 (one module's bf16 island)."""
    if torch.is_autocast_enabled("cpu"):  # the whole model is under bf16 already
        return inner(*args, **kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = inner(*args, **kwargs)
    return _to_float(out)


#: per sam2 ``RoPEAttention``: its rotary tables (cos, sin, cis) by (tokens, device)
_rope_tables: weakref.WeakKeyDictionary[torch.nn.Module, dict] = weakref.WeakKeyDictionary()


def _tables(attn: Any, n: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Return (cos, sin, cis) of ``attn``'s rotary encoding for ``n`` tokens (cached)."""
    cache = _rope_tables.setdefault(attn, {})
    hit = cache.get((n, device))
    if hit is None:
        side = math.sqrt(n)
        cis = attn.compute_cis(end_x=side, end_y=side).to(device)
        hit = cache[(n, device)] = (cis.real.contiguous(), cis.imag.contiguous(), cis)
    return hit


def _rope_attention(
    attn: Any,
    inner: Callable,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_k_exclude_rope: int = 0,
) -> torch.Tensor:
    """Compute sam2 1.1.0's ``RoPEAttention.forward`` (eval) attending on bf16 inputs.

    The projections follow the surrounding autocast; the rotary encoding is sam2's
    in float32 (:func:`.memory_attention.rotate`: keys of several memory frames reuse
    one table by broadcasting instead of sam2's repeated copy);
    ``scaled_dot_product_attention`` gets bf16 queries, keys and values (the CPU flash
    kernel accumulates and takes the softmax in float32) and its output goes back to
    the projections' dtype. Shapes it does not know go to sam2's forward (``inner``).
    """
    n_q, n_rope = q.shape[-2], k.shape[-2] - num_k_exclude_rope
    if q.dim() != 3 or attn.training or n_rope % n_q or (n_rope != n_q and not attn.rope_k_repeat):
        return inner(q, k, v, num_k_exclude_rope)
    from .memory_attention import rotate  # when called: no import between accel modules

    q, k, v = attn.q_proj(q), attn.k_proj(k), attn.v_proj(v)
    b, heads = q.shape[0], attn.num_heads
    q, k, v = (x.reshape(b, x.shape[1], heads, -1).transpose(1, 2) for x in (q, k, v))
    cos, sin, cis = _tables(attn, n_q, q.device)
    q, k = rotate(q, cos, sin, cis), rotate(k, cos, sin, cis, n_rope)
    bf = torch.bfloat16
    out = F.scaled_dot_product_attention(q.to(bf), k.to(bf), v.to(bf)).to(v.dtype)
    out = out.transpose(1, 2).reshape(b, -1, out.shape[1] * out.shape[-1])
    return attn.out_proj(out)


def _attention_modules(predictor: Any) -> list[torch.nn.Module]:
    """List the memory attention's sam2 ``RoPEAttention`` modules ([] for another model)."""
    from sam2.modeling.sam.transformer import RoPEAttention

    return [m for m in predictor.memory_attention.modules() if type(m) is RoPEAttention]


def set_bf16_attention(predictor: Any, on: bool = True) -> int:
    """Run the memory attention's matrix products in bf16 (``on``), or float32 again.

    The memory attention runs under bf16 autocast, each ``RoPEAttention`` attends on
    bf16 inputs (:func:`_rope_attention`) and the output is float32. Its linears'
    weights are not changed here (:func:`configure_cpu` keeps them in bf16).

    Parameters
    ----------
    predictor : a sam2 video predictor on the CPU.
    on : bf16 matrix products or sam2's float32.

    Returns
    -------
    int
        How many modules changed (0: already as asked, or not sam2's memory attention).
    """
    ropes = _attention_modules(predictor)
    if not ropes:
        return 0
    if on:  # the float32 memory cast beneath this forward, never on top of it (undo order)
        from .memory_attention import float32_memory

        float32_memory(predictor)
    ma = predictor.memory_attention
    n = int(_replace_forward(ma, "bf16_attention", _weak(ma, _bf16_block) if on else None))
    for attn in ropes:
        forward = _weak(attn, _rope_attention) if on else None
        n += int(_replace_forward(attn, "bf16_attention", forward))
    return n


#: the partial bf16 speed-ups that put one of the predictor's modules under bf16
#: (the memory encoder under bf16 was measured no faster at 1024: not offered)
BF16_PARTS = {"bf16_encoder": "image_encoder"}


def set_bf16_part(predictor: Any, speedup: str, on: bool = True) -> int:
    """Run one module of :data:`BF16_PARTS` under bf16 autocast (``on``), or float32 again.

    Its outputs are float32 either way; its linears' weights are not changed here
    (:func:`configure_cpu` keeps them in bf16).

    Parameters
    ----------
    predictor : a sam2 video predictor on the CPU.
    speedup : a key of :data:`BF16_PARTS` (``"bf16_encoder"``: the image encoder).
    on : bf16 or float32.

    Returns
    -------
    int
        1 when the module changed, 0 when it already was as asked.
    """
    module = getattr(predictor, BF16_PARTS[speedup])
    return int(_replace_forward(module, speedup, _weak(module, _bf16_block) if on else None))


def _bf16_linears(predictor: Any, on: dict[str, bool]) -> None:
    """Keep in bf16 exactly the linears that run under bf16 autocast with ``on``."""
    if on["bf16"]:
        set_bf16_weights(predictor, True)
        return
    parts = [(getattr(predictor, name), on[key]) for key, name in BF16_PARTS.items()]
    attention = on["bf16_attention"] and bool(_attention_modules(predictor))
    parts.append((predictor.memory_attention, attention))
    inside = {id(m) for part, _ in parts for m in part.modules()}
    for m in predictor.modules():  # float32 outside the bf16 islands
        if id(m) not in inside and isinstance(m, torch.nn.Linear):
            set_bf16_weights(m, False)
    for part, bf16 in parts:
        set_bf16_weights(part, bf16)


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

"""bfloat16 on the CPU: the checks, the bf16 memory attention and image encoder, weights.

The bf16 half of the CPU path (:mod:`.cpu` decides what goes on and configures it):
whether this CPU computes bf16 natively and fast enough (:func:`check_bf16`,
:func:`check_bf16_attention`), the memory attention's matrix products on bf16 inputs
(:func:`set_bf16_attention`), one module under bf16 autocast with float32 outputs
(:func:`set_bf16_part`), and linears' weights kept in bf16 (:func:`set_bf16_weights`).
What each replaced is kept here (weak references) and put back when switched off.
Only imported with torch.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .forwards import _replace_forward, _weak

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

#: the flags of a CPU that computes bfloat16 natively
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


#: relative error a bf16 check may show (bf16 keeps 8 bits of mantissa: ~0.4 % a value)
BF16_TOLERANCE = 2e-2


#: bf16 must take at most this share of float32's time in the check to be used
BF16_MAX_TIME_RATIO = 0.8


#: the float32 parameters of each linear kept in bf16 (:func:`set_bf16_weights`)
_fp32: weakref.WeakKeyDictionary[torch.nn.Module, list[torch.Tensor]] = weakref.WeakKeyDictionary()


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

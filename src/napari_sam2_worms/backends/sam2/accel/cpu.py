"""SAM 2 on the CPU: bf16 autocast, channels-last convolutions and thread settings.

Each speed-up goes on only where a check at configuration time shows that it runs,
gives the same numbers within tolerance and (for bf16) is faster; a check that fails
turns its speed-up off with a one-line notice, and SAM 2 runs as before (float32,
sam2's own layouts). Everything here is for ``device.type == "cpu"``: CUDA has its own
path (:mod:`..setup`) and Apple's MPS keeps float32 and sam2's layouts (the same
device-agnostic code as the CPU without these speed-ups; not testable here).

- **bf16 autocast**, asked for with ``NAPARI_SAM2_WORMS_CPU_BF16=1`` (:data:`BF16_ENV`;
  off by default, see there), where the CPU computes bfloat16 natively (AVX-512 BF16
  or AMX: ``/proc/cpuinfo`` flags ``avx512_bf16`` / ``amx_bf16``, and oneDNN's own
  check): the matrix products, most of a frame, run 10-20x faster on AMX. Checked by a
  matrix product in both precisions (same result within 2 %, bf16 faster). A CPU
  without native bf16 emulates it and gets slower: off there. The linears keep bf16
  weights meanwhile (:func:`set_bf16_weights`: a cast per call costs more than the
  product). SAM 2 on a GPU runs under bf16 autocast too.
- **Channels-last convolutions**: the convolution weights and inputs in NHWC, oneDNN's
  preferred layout (the patch embedding, the memory encoder's mask downsampler and
  depthwise fuser, the mask decoder's upscaling). Same convolution, another summation
  order; checked on one convolution of the model.
- **Threads**: PyTorch sizes its pool by the machine's cores; in a container or under
  ``taskset`` fewer may be ours, and an oversubscribed pool is slow. The pool is cut to
  the cores this process may run on (affinity and cgroup quota) unless
  ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set it.

- **Hiera's positional embedding** is made once per input size (:func:`cache_pos_embed`),
  not interpolated again for every frame.

The caches of the GPU path (the prompt encoder's constant answers,
:mod:`.prompt_cache`; the memory bank's positional part, :mod:`.memory`) are
installed on every device by :func:`..setup.configure_predictor`. Only imported
with torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import types
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

#: the flags of a CPU that computes bfloat16 natively
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: relative error a bf16 check may show (bf16 keeps 8 bits of mantissa: ~0.4 % a value)
BF16_TOLERANCE = 2e-2
#: bf16 must take at most this share of float32's time in the check to be used
BF16_MAX_TIME_RATIO = 0.8

#: the environment variable that asks for bf16 on the CPU ("1": where its check passes;
#: unset or "0": float32). Off by default: on random weights bf16's rounding moves mask
#: edges (IoU with float32 0.99 at a 256 px input, 0.87 at 512 over 3 frames, measured),
#: and without SAM 2 weights we cannot tell whether real masks keep within tolerance
BF16_ENV = "NAPARI_SAM2_WORMS_CPU_BF16"

#: what was decided, per process (the checks do not depend on the model)
_checks: dict[str, bool] = {}


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX) and PyTorch's
    oneDNN can use it."""
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


def _timed(fn: Any, *args: Any) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def check_bf16() -> bool:
    """bf16 on this CPU: native, the same matrix product within :data:`BF16_TOLERANCE`
    under autocast, and a bf16 matrix product faster than float32's
    (:data:`BF16_MAX_TIME_RATIO`; best of 5 each, interleaved, so that a loaded machine
    slows both alike: an emulated bf16 is slower, AMX's ~10x faster)."""
    if not native_bf16():
        log.info("SAM 2 on the CPU: no native bf16 on this CPU, float32 kept")
        return False
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1024, 768, generator=g)
    w = torch.randn(768, 768, generator=g) / 768**0.5
    a16, w16 = a.bfloat16(), w.bfloat16()
    with torch.inference_mode():
        ref = F.linear(a, w)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = F.linear(a, w).float()
        err = float((out - ref).norm() / ref.norm())
        if not torch.isfinite(out).all() or err > BF16_TOLERANCE:
            log.warning("SAM 2 on the CPU: bf16 gave wrong numbers (error %.3g), float32 kept", err)
            return False
        t32 = t16 = float("inf")
        for _ in range(5):
            t32 = min(t32, _timed(F.linear, a, w))
            t16 = min(t16, _timed(F.linear, a16, w16))
    if t16 > BF16_MAX_TIME_RATIO * t32:
        log.info(
            "SAM 2 on the CPU: bf16 is not faster here (%.1f vs %.1f ms), float32 kept",
            1e3 * t16,
            1e3 * t32,
        )
        return False
    log.info("SAM 2 on the CPU: bf16 autocast (%.0fx faster matrix products)", t32 / t16)
    return True


def set_bf16_weights(module: torch.nn.Module, on: bool = True) -> int:
    """Keep every ``Linear``'s weight and bias under ``module`` in bfloat16 (``on``), the
    float32 ones aside, or put the float32 ones back; idempotent; returns how many
    changed. Autocast would cast them on every call (no cache for weights that need no
    gradient), and on the CPU a cast costs more than the bf16 product: 44 -> 16 ms for
    a 1024x768x768 linear here. Same numbers (autocast rounds them alike). Linears
    must then run under bf16 autocast (:func:`autocast` sees to it)."""
    n = 0
    for lin in module.modules():
        if not isinstance(lin, torch.nn.Linear) or on == hasattr(lin, "_nsw_fp32"):
            continue
        params = [q for q in (lin.weight, lin.bias) if q is not None]
        if on:
            lin._nsw_fp32 = [q.data for q in params]
            for q in params:
                q.data = q.data.to(torch.bfloat16)
        else:
            for q, data in zip(params, lin._nsw_fp32):
                q.data = data
            del lin._nsw_fp32
        n += 1
    return n


def _is_conv(m: torch.nn.Module) -> bool:
    return isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))


def _cl_forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return self._nsw_nchw_forward(x.contiguous(memory_format=torch.channels_last))


def check_channels_last(module: torch.nn.Module) -> bool:
    """One convolution of ``module`` gives the same output in channels-last layout."""
    conv = next((m for m in module.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if conv is None:
        return False
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, conv.in_channels, 32, 32, generator=g)
    w = conv.weight.detach()
    with torch.inference_mode():
        args = (conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        ref = F.conv2d(x, w, *args)
        out = F.conv2d(
            x.contiguous(memory_format=torch.channels_last),
            w.contiguous(memory_format=torch.channels_last),
            *args,
        )
    scale = float(ref.abs().max()) or 1.0
    ok = bool(torch.isfinite(out).all()) and float((out - ref).abs().max()) <= 1e-4 * scale
    if not ok:
        log.warning("SAM 2 on the CPU: channels-last convolutions differ, sam2's layout kept")
    return ok


def set_channels_last(module: torch.nn.Module, on: bool = True) -> int:
    """Every ``Conv2d`` / ``ConvTranspose2d`` under ``module`` in channels-last layout
    (``on``) or back in sam2's (``on=False``); idempotent; returns how many changed."""
    n = 0
    for conv in module.modules():
        if not _is_conv(conv) or getattr(conv, "_nsw_channels_last", False):
            continue  # _nsw_channels_last: the CUDA path's depthwise forward (convs)
        if on == getattr(conv, "_nsw_cpu_channels_last", False):
            continue
        fmt = torch.channels_last if on else torch.contiguous_format
        with torch.no_grad():
            conv.weight.data = conv.weight.data.contiguous(memory_format=fmt)
        if on:
            conv._nsw_nchw_forward = conv.forward
            conv.forward = types.MethodType(_cl_forward, conv)
        else:
            conv.forward = conv._nsw_nchw_forward
            del conv._nsw_nchw_forward
        conv._nsw_cpu_channels_last = on
        n += 1
    return n


def cache_pos_embed(trunk: Any) -> bool:
    """Hiera's positional embedding made once per feature size, not every frame
    (idempotent; False for a trunk without sam2's ``_get_pos_embed``).

    sam2 interpolates its learnt embedding to the feature grid (bicubic) and adds the
    tiled window embedding on every image it encodes; both depend only on the weights
    and the input size. Same tensor, from a cache keyed by the size, the device and
    the inference-mode state. Reads the weights when first asked for a size: the
    weights must not change afterwards (inference only).
    """
    if getattr(trunk, "_nsw_pos_cache", None) is not None:
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
    trunk._nsw_pos_cache = cache
    return True


def usable_threads() -> int:
    """The cores this process may run on: affinity, capped by a cgroup CPU quota."""
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
    """Cut PyTorch's thread pool to :func:`usable_threads` unless the environment set
    it; returns the number of threads used."""
    if any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        return torch.get_num_threads()
    n = usable_threads()
    if torch.get_num_threads() > n:
        log.info("SAM 2 on the CPU: %d threads (the cores this process may use)", n)
        torch.set_num_threads(n)
    return torch.get_num_threads()


def bf16_requested() -> bool:
    """Whether the environment asks for bf16 on the CPU (:data:`BF16_ENV`)."""
    return os.environ.get(BF16_ENV, "").strip().lower() in ("1", "on", "true", "yes", "auto")


def _check(name: str, fn: Any, *args: Any) -> bool:
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


def configure_cpu(
    predictor: Any, *, bf16: bool | None = None, channels_last: bool | None = None
) -> dict[str, bool]:
    """Switch the CPU speed-ups on ``predictor`` (a model on the CPU); None means: as
    chosen before on this predictor, else where its check passes. Idempotent; returns
    what is on (also ``predictor._nsw_cpu``).

    A choice made here sticks to the predictor (a backend opening a video configures
    it again with None): benchmarks and tests compare both ways on one model.
    """
    set_threads()
    cache_pos_embed(predictor.image_encoder.trunk)
    wanted = getattr(predictor, "_nsw_cpu_wanted", {})
    if bf16 is not None or channels_last is not None:
        wanted = dict(wanted)
        if bf16 is not None:
            wanted["bf16"] = bool(bf16)
        if channels_last is not None:
            wanted["channels_last"] = bool(channels_last)
        predictor._nsw_cpu_wanted = wanted
    bf16, channels_last = wanted.get("bf16"), wanted.get("channels_last")
    if bf16 is None and not bf16_requested():
        use_bf16 = False
    else:
        use_bf16 = _check("bf16", check_bf16) if bf16 is None else bool(bf16)
    use_cl = (
        _check("channels_last", check_channels_last, predictor)
        if channels_last is None
        else bool(channels_last)
    )
    set_channels_last(predictor, use_cl)
    set_bf16_weights(predictor, use_bf16)
    on = {"bf16": use_bf16, "channels_last": use_cl}
    predictor._nsw_cpu = on
    return on


def autocast(predictor: Any, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast block for ``predictor`` on ``device``: bf16 on CUDA (the GPU path),
    bf16 on a CPU where :func:`configure_cpu` switched it on, else none."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and (getattr(predictor, "_nsw_cpu", None) or {}).get("bf16"):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()

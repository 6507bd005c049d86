"""Triton kernels of the GPU path (CUDA, bf16), each a custom op with a PyTorch fallback.

- ``rope_keys``: the memory attention's keys. Per layer and per frame they are
  ``rotate(k_proj(memory + pos))`` for ~28,700 memory tokens per object, 64 wide in,
  256 wide out. Through PyTorch that is an addition (written), a matrix product (keys
  written) and a rotary encoding (read and written again): at 10 objects ~440 MB of
  memory traffic per layer. The kernel reads the 64-wide memory and positions once and
  writes the rotated keys once: each program takes a block of tokens for every object,
  multiplies them by the even and the odd rows of the projection (the two halves of
  each rotated pair), rotates the pairs with the cos/sin tables of the token's position
  and stores them interleaved, as sam2's complex rotation does. The arithmetic follows
  sam2 under bf16 autocast (``memory + pos`` rounded to bf16, float32 products, bias
  and rotation), except that the keys are rounded to bf16 once, after the rotation
  (sam2 rounds them before it too). Tokens from ``n_rope`` on (object pointers) are
  projected without rotation.
- ``rope_copies``: rotated queries written once per key chunk of the split-key
  attention.
- ``mask_stage``: a (3x3 stride-2 convolution, LayerNorm2d, GELU) stage of sam2's mask
  downsampler with few channels, in one pass.

Custom ops, so that ``torch.compile`` calls them as opaque kernels and CUDA graphs
capture them. Used on Ampere or newer (:func:`usable`); a kernel that fails to compile
or launch falls back, once and for good, to the same function in PyTorch
(:data:`FAILED`). Imported only where used (needs ``triton``, shipped with PyTorch's
CUDA builds). Tests: Triton's CPU interpreter (``tests/core``), bf16 on a GPU
(``tests/gpu``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

#: kernels that failed to compile or launch here; PyTorch computes their ops from then on
FAILED: dict[str, str] = {}


def usable(device: torch.device) -> bool:
    """Tell whether these kernels are for ``device``.

    They are for CUDA with bf16 tensor cores (Ampere or newer); elsewhere the callers
    keep their PyTorch paths.
    """
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] >= 8


def _guarded(
    name: str,
    device: torch.device,
    launch: Callable[[], torch.Tensor],
    fallback: Callable[[], torch.Tensor],
):
    """Run ``launch()``, or ``fallback()`` (the same function in PyTorch) once ``name`` failed.

    A GPU or Triton version this kernel does not compile for must not stop a
    propagation.
    """
    if name not in FAILED:
        try:
            return launch()
        except Exception as exc:
            FAILED[name] = f"{type(exc).__name__}: {exc}"
            log.warning("Triton kernel %s unavailable (%s); PyTorch computes it", name, exc)
    with torch.autocast(device.type, enabled=False):
        return fallback()


#: tokens per program (each program does them for every object)
BLOCK_TOKENS = 64
#: warps per program
NUM_WARPS = 8


@triton.jit
def _rope_keys_kernel(
    mem_ptr,
    pos_ptr,
    we_ptr,
    wo_ptr,
    be_ptr,
    bo_ptr,
    cos_ptr,
    sin_ptr,
    out_ptr,
    n_batch,
    n_tokens,
    n_rope,
    n_table,
    s_mb,
    s_ml,
    s_pb,
    s_pl,
    BM: tl.constexpr,
    DIN: tl.constexpr,
    PAIRS: tl.constexpr,
):
    # one block of tokens, all objects: the weights and the rotation of each token
    # are loaded once and used for every object
    tok = tl.program_id(0) * BM + tl.arange(0, BM)
    inside = tok < n_tokens
    tok64 = tok.to(tl.int64)
    k = tl.arange(0, DIN)
    n = tl.arange(0, PAIRS)
    w_even = tl.load(we_ptr + k[:, None] * PAIRS + n[None, :])  # (DIN, PAIRS)
    w_odd = tl.load(wo_ptr + k[:, None] * PAIRS + n[None, :])
    b_even = tl.load(be_ptr + n)[None, :]
    b_odd = tl.load(bo_ptr + n)[None, :]
    rope = inside & (tok < n_rope)
    row = (tok % n_table).to(tl.int64)
    c = tl.load(cos_ptr + row[:, None] * PAIRS + n[None, :], mask=rope[:, None], other=1.0)
    s = tl.load(sin_ptr + row[:, None] * PAIRS + n[None, :], mask=rope[:, None], other=0.0)
    o = tl.arange(0, 2 * PAIRS)
    for b in range(n_batch):
        x = tl.load(
            mem_ptr + tok64[:, None] * s_ml + b * s_mb + k[None, :],
            mask=inside[:, None],
            other=0.0,
        ).to(tl.float32)
        x += tl.load(
            pos_ptr + tok64[:, None] * s_pl + b * s_pb + k[None, :],
            mask=inside[:, None],
            other=0.0,
        ).to(tl.float32)
        x = x.to(w_even.dtype)  # bf16 (float32 weights: the CPU interpreter's tests)
        even = tl.dot(x, w_even) + b_even
        odd = tl.dot(x, w_odd) + b_odd
        out = tl.interleave(even * c - odd * s, even * s + odd * c)
        tl.store(
            out_ptr + (tok64[:, None] + b * n_tokens) * (2 * PAIRS) + o[None, :],
            out.to(tl.bfloat16),
            mask=inside[:, None],
        )


@torch.library.custom_op("napari_sam2_worms::rope_keys", mutates_args=())
def rope_keys(
    memory: torch.Tensor,
    pos: torch.Tensor,
    w_even: torch.Tensor,
    w_odd: torch.Tensor,
    b_even: torch.Tensor,
    b_odd: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    n_rope: int,
) -> torch.Tensor:
    """Rotated keys (B, L, 2P) bf16 of ``memory + pos`` (B, L, D), last dims dense.

    ``w_even``/``w_odd``: (D, P) bf16, the transposed even/odd rows of the key
    projection; ``b_even``/``b_odd``: (P,) float32; ``cos``/``sin``: (T, P) float32
    tables of the ``T`` positions (token ``l`` uses row ``l % T``); tokens from
    ``n_rope`` on are not rotated.
    """
    b, n_tokens, _ = memory.shape
    pairs = w_even.shape[1]
    out = torch.empty((b, n_tokens, 2 * pairs), device=memory.device, dtype=torch.bfloat16)
    if b == 0 or n_tokens == 0:
        return out

    def fallback() -> torch.Tensor:  # memory_attention's PyTorch path, in float32
        from .rope import rotate

        x = (memory.float() + pos.float()).to(w_even.dtype).float()
        w = torch.stack((w_even, w_odd), dim=-1).flatten(-2).float()  # interleave pairs
        bias = torch.stack((b_even, b_odd), dim=-1).flatten().float()
        k = rotate((x @ w + bias).unsqueeze(1), cos, sin, None, n_rope)
        return k.squeeze(1).to(torch.bfloat16)

    return _guarded(
        "rope_keys",
        memory.device,
        lambda: _launch_rope_keys(memory, pos, w_even, w_odd, b_even, b_odd, cos, sin, n_rope, out),
        fallback,
    )


def _launch_rope_keys(memory, pos, w_even, w_odd, b_even, b_odd, cos, sin, n_rope, out):
    b, n_tokens, din = memory.shape
    pairs = w_even.shape[1]
    grid = (triton.cdiv(n_tokens, BLOCK_TOKENS),)
    _rope_keys_kernel[grid](
        memory,
        pos,
        w_even,
        w_odd,
        b_even,
        b_odd,
        cos,
        sin,
        out,
        b,
        n_tokens,
        n_rope,
        cos.shape[0],
        memory.stride(0),
        memory.stride(1),
        pos.stride(0),
        pos.stride(1),
        BM=BLOCK_TOKENS,
        DIN=din,
        PAIRS=pairs,
        num_warps=NUM_WARPS,
    )
    return out


@rope_keys.register_fake
def _(memory, pos, w_even, w_odd, b_even, b_odd, cos, sin, n_rope):
    b, n_tokens, _ = memory.shape
    return memory.new_empty((b, n_tokens, 2 * w_even.shape[1]), dtype=torch.bfloat16)


def key_weights(attn) -> tuple[torch.Tensor, ...]:
    """Lay out a sam2 ``RoPEAttention``'s key projection for the kernel.

    Returns (w_even, w_odd, b_even, b_odd), see :func:`rope_keys`.
    """
    w = attn.k_proj.weight.detach()
    bias = attn.k_proj.bias.detach()
    return (
        w[0::2].t().contiguous().to(torch.bfloat16),
        w[1::2].t().contiguous().to(torch.bfloat16),
        bias[0::2].float().contiguous(),
        bias[1::2].float().contiguous(),
    )


# -- rotated queries, one copy per key chunk ---------------------------------------------
@triton.jit
def _rope_copies_kernel(
    x_ptr,
    cos_ptr,
    sin_ptr,
    out_ptr,
    n_tokens,
    n_table,
    s_xb,
    s_xl,
    copies,
    BM: tl.constexpr,
    PAIRS: tl.constexpr,
):
    tok = tl.program_id(0) * BM + tl.arange(0, BM)
    b = tl.program_id(1).to(tl.int64)
    inside = tok < n_tokens
    tok64 = tok.to(tl.int64)
    n = tl.arange(0, PAIRS)
    src = x_ptr + b * s_xb + tok64[:, None] * s_xl + 2 * n[None, :]
    even = tl.load(src, mask=inside[:, None], other=0.0).to(tl.float32)
    odd = tl.load(src + 1, mask=inside[:, None], other=0.0).to(tl.float32)
    row = (tok % n_table).to(tl.int64)
    c = tl.load(cos_ptr + row[:, None] * PAIRS + n[None, :], mask=inside[:, None], other=1.0)
    s = tl.load(sin_ptr + row[:, None] * PAIRS + n[None, :], mask=inside[:, None], other=0.0)
    out = tl.interleave(even * c - odd * s, even * s + odd * c).to(tl.bfloat16)
    o = tl.arange(0, 2 * PAIRS)
    for j in range(copies):
        dst = out_ptr + ((b * copies + j) * n_tokens + tok64[:, None]) * (2 * PAIRS)
        tl.store(dst + o[None, :], out, mask=inside[:, None])


@torch.library.custom_op("napari_sam2_worms::rope_copies", mutates_args=())
def rope_copies(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, batch: int, copies: int
) -> torch.Tensor:
    """Rotate ``x`` into ``copies`` equal copies per object, in one kernel.

    ``x`` (B or 1, L, 2P) -> bf16 (batch, copies, L, 2P): the copies are written by the
    rotation itself (the queries of the split-key
    attention; a batch-1 ``x`` is shared by all ``batch`` objects). Token ``l`` uses
    row ``l % T`` of the (T, P) float32 tables; the last dimension of ``x`` is dense.

    Through PyTorch the rotation and the copy cost 0.145 ms per layer at 10 objects on
    an H100 (compiled); this kernel reads the queries once and writes each copy once.
    """
    _, n_tokens, dim = x.shape
    out = torch.empty((batch, copies, n_tokens, dim), device=x.device, dtype=torch.bfloat16)
    if out.numel() == 0:
        return out

    def fallback() -> torch.Tensor:  # memory_attention's PyTorch path, then the copies
        from .rope import rotate

        rot = rotate(x.float().unsqueeze(1), cos, sin).to(torch.bfloat16)
        return rot.expand(batch, copies, n_tokens, dim).contiguous()

    return _guarded(
        "rope_copies",
        x.device,
        lambda: _launch_rope_copies(x, cos, sin, batch, copies, out),
        fallback,
    )


def _launch_rope_copies(x, cos, sin, batch, copies, out):
    _, n_tokens, dim = x.shape
    grid = (triton.cdiv(n_tokens, BLOCK_TOKENS), batch)
    _rope_copies_kernel[grid](
        x,
        cos,
        sin,
        out,
        n_tokens,
        cos.shape[0],
        x.stride(0) if x.shape[0] > 1 else 0,
        x.stride(1),
        copies,
        BM=BLOCK_TOKENS,
        PAIRS=dim // 2,
        num_warps=NUM_WARPS,
    )
    return out


@rope_copies.register_fake
def _(x, cos, sin, batch, copies):
    return x.new_empty((batch, copies, x.shape[1], x.shape[2]), dtype=torch.bfloat16)


# -- the memory encoder's first mask convolutions ----------------------------------------
#: output pixels per program of :func:`mask_stage`
BLOCK_PIXELS = 512


@triton.jit
def _mask_stage_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    lnw_ptr,
    lnb_ptr,
    out_ptr,
    height,
    width,
    out_h,
    out_w,
    s_xb,
    s_xc,
    s_xh,
    s_xw,
    eps,
    CIN: tl.constexpr,
    COUT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pix = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    b = tl.program_id(1).to(tl.int64)
    n_out = out_h * out_w
    inside = pix < n_out
    oh = pix // out_w
    ow = pix % out_w
    co = tl.arange(0, COUT)
    acc = tl.zeros((BLOCK, COUT), dtype=tl.float32)
    for ci in tl.static_range(CIN):
        for ki in tl.static_range(3):
            ih = 2 * oh - 1 + ki
            for kj in tl.static_range(3):
                iw = 2 * ow - 1 + kj
                ok = inside & (ih >= 0) & (ih < height) & (iw >= 0) & (iw < width)
                xv = tl.load(
                    x_ptr + b * s_xb + ci * s_xc + ih.to(tl.int64) * s_xh + iw * s_xw,
                    mask=ok,
                    other=0.0,
                ).to(tl.float32)
                wv = tl.load(w_ptr + co * (CIN * 9) + (ci * 9 + ki * 3 + kj))
                acc += xv[:, None] * wv[None, :]
    acc += tl.load(b_ptr + co)[None, :]
    mean = tl.sum(acc, axis=1) / COUT
    d = acc - mean[:, None]
    var = tl.sum(d * d, axis=1) / COUT
    y = d / tl.sqrt(var + eps)[:, None]
    y = y * tl.load(lnw_ptr + co)[None, :] + tl.load(lnb_ptr + co)[None, :]
    y = 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))
    dst = out_ptr + (b * COUT + co[None, :]) * n_out + pix[:, None]
    tl.store(dst, y.to(out_ptr.dtype.element_ty), mask=inside[:, None])


@torch.library.custom_op("napari_sam2_worms::mask_stage", mutates_args=())
def mask_stage(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Compute ``gelu(layer_norm_2d(conv2d(x, weight, bias, stride=2, padding=1)))`` in one pass.

    The output is bf16 (B, COUT, ceil(H/2), ceil(W/2)).

    sam2's mask downsampler starts with two such stages (1 -> 4 and 4 -> 16 channels at
    1024 and 512 pixels a side). cuDNN has no good kernel for so few channels (10
    objects, H100, bf16: 0.12 and 0.55 ms, any layout); this one reads the input and
    writes the output once, in float32 arithmetic (the layer norm over channels and the
    exact GELU on each output pixel's channels, held in registers). ``weight``: (COUT,
    CIN, 3, 3) float32, COUT a power of two.
    """
    b, _, h, w = x.shape
    cout = weight.shape[0]
    oh, ow = (h + 1) // 2, (w + 1) // 2
    out = torch.empty((b, cout, oh, ow), device=x.device, dtype=torch.bfloat16)
    if out.numel() == 0:
        return out

    def fallback() -> torch.Tensor:
        y = F.conv2d(x.float(), weight.float(), bias.float(), stride=2, padding=1)
        u = y.mean(1, keepdim=True)
        v = (y - u).pow(2).mean(1, keepdim=True)
        y = (y - u) / torch.sqrt(v + eps)
        y = ln_weight.float()[:, None, None] * y + ln_bias.float()[:, None, None]
        return F.gelu(y).to(torch.bfloat16).contiguous()  # the kernel's (and fake's) layout

    return _guarded(
        "mask_stage",
        x.device,
        lambda: _launch_mask_stage(x, weight, bias, ln_weight, ln_bias, eps, out),
        fallback,
    )


def _launch_mask_stage(x, weight, bias, ln_weight, ln_bias, eps, out):
    b, cin, h, w = x.shape
    cout = weight.shape[0]
    oh, ow = (h + 1) // 2, (w + 1) // 2
    grid = (triton.cdiv(oh * ow, BLOCK_PIXELS), b)
    _mask_stage_kernel[grid](
        x,
        weight,
        bias,
        ln_weight,
        ln_bias,
        out,
        h,
        w,
        oh,
        ow,
        x.stride(0),
        x.stride(1),
        x.stride(2),
        x.stride(3),
        eps,
        CIN=cin,
        COUT=cout,
        BLOCK=BLOCK_PIXELS,
        num_warps=4,
    )
    return out


@mask_stage.register_fake
def _(x, weight, bias, ln_weight, ln_bias, eps):
    b, _, h, w = x.shape
    return x.new_empty((b, weight.shape[0], (h + 1) // 2, (w + 1) // 2), dtype=torch.bfloat16)

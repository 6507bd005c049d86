"""A faster, exact forward for SAM 2's memory attention (the cost of many objects).

With many objects a propagated frame spends most of its time in memory attention:
per object and per layer, 4,096 queries attend to ~28,700 memory keys (7 memory frames
of 64x64 tokens plus object pointers), head dimension 256. This module replaces
``MemoryAttention.forward`` with one that computes the same function with less work:

- **Values stay 64-dimensional.** The memory tokens are 64-dimensional and the value
  projection is linear, so ``out_proj(softmax(QK) @ v_proj(M)) ==
  (W_out W_v)(softmax(QK) @ M) + (W_out b_v + b_out)`` (softmax rows sum to one). We
  attend with the raw memory as values and apply one fused 64->256 projection to the
  4,096 outputs instead of projecting ~28,700 values: the attention's second matrix
  product is 4x smaller and the value tensor is never written.
- **Rotary encoding in real arithmetic.** sam2 rotates queries and keys through complex
  float32 tensors, which the compiler cannot fuse; the same rotation written with cos
  and sin tables fuses into one element-wise kernel. Keys reuse the 64x64 table for
  each memory frame through broadcasting (no repeated table).
- **The first layer's self-attention runs once.** All objects of a frame share the same
  image features (sam2 expands one tensor over the objects), so the first layer's
  self-attention and its cross-attention queries are computed once and broadcast.
- **Keys in one kernel** (CUDA, bf16): adding the positions, projecting and rotating
  the ~28,700 keys per object is one Triton kernel (:mod:`.triton_kernels`) that writes
  the keys once instead of three passes over them.
- **Bias and ReLU in the matrix product** (CUDA, bf16): the MLP's first layer is one
  cuBLASLt call with a ReLU epilogue (:func:`_hidden`).
- **Split keys when few objects leave the GPU idle** (CUDA). With one object the
  cross-attention has only 32 blocks of 128 queries for 132 multiprocessors; the keys
  are cut into chunks attended in parallel (one cuDNN call, chunks as heads) and the
  partial results merged by their log-sum-exp (:func:`split_attention`).

Everything else (layer norms, MLP, where positional encodings are added) follows
sam2 1.1.0's ``MemoryAttentionLayer`` exactly. Results equal sam2's up to floating-point
summation order (tested in float32: ``tests/core/test_sam2_attention.py``). Models this
does not recognise keep sam2's forward (:func:`install_fast_memory_attention` returns
False).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .rope import rotate
from .state import FastAttention, require_state

if TYPE_CHECKING:
    from .state import AccelState

log = logging.getLogger(__name__)


@dataclass
class AttnTables:
    """What the fast forward reads for one sam2 ``RoPEAttention``."""

    #: rotary tables (tokens, head_dim / 2): real and imaginary parts, and complex
    cos: torch.Tensor
    sin: torch.Tensor
    cis: torch.Tensor


@dataclass
class CrossTables(AttnTables):
    """What the fast forward reads for a cross-attention (rotary tables and more)."""

    #: the value and output projections fused into one
    vo_weight: torch.Tensor
    vo_bias: torch.Tensor
    #: the Triton key kernel's weights (:func:`.triton_kernels.key_weights`; None: PyTorch)
    key_weights: tuple | None = None


@dataclass
class LayerTables:
    """What the fast forward reads for one sam2 ``MemoryAttentionLayer``."""

    self_attn: AttnTables
    cross_attn: CrossTables
    #: ``linear1``'s weight and bias in bf16 for the fused ReLU (CUDA; None: sam2's)
    linear1_bf16: tuple[torch.Tensor, torch.Tensor] | None = None


def _rope_tables(
    attn: Any, side: int, device: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Make the (cos, sin, cis) tables (side*side tokens, head_dim/2) of a ``RoPEAttention``.

    From sam2's own ``compute_cis`` (cis = cos + i sin).
    """
    cis = attn.compute_cis(end_x=side, end_y=side).to(device)
    return cis.real.float().contiguous(), cis.imag.float().contiguous(), cis


#: the cuDNN attention with log-sum-exp failed once here: attend in one pass from then on
_SPLIT_FAILED: list[str] = []


def key_splits(batch: int) -> int:
    """Choose the key chunks for the cross-attention of ``batch`` objects.

    H200, 4,096 queries, 28,736 keys, bf16: 1 object 0.46 -> 0.17 ms with 4 chunks, 2
    objects 0.48 -> 0.30 ms with 2, 10 objects 1.51 -> 1.40 ms with 2; more objects fill
    the GPU alone. At 10 objects on an H100 the two chunks save 0.2 ms per call, the
    queries' copy costs 0.15.
    """
    if batch == 1:
        return 4
    return 2 if batch <= 10 else 1


def split_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, splits: int) -> torch.Tensor:
    """Compute ``scaled_dot_product_attention(q, k, v)`` (one head) in key chunks.

    The keys are cut into ``splits`` equal chunks, attended in one cuDNN call (chunks
    as heads), merged by the chunks' log-sum-exp: the same attention up to bf16
    rounding of the partial results. CUDA only; the key count must be a multiple of
    ``splits``. ``q`` is (B, 1, L, D), or already (B, splits, L, D) with one copy per
    chunk.
    """
    b, _, lq, d = q.shape
    lk = k.shape[2]
    qs = q if q.shape[1] == splits else q.expand(b, splits, lq, d).contiguous()
    ks = k.reshape(b, splits, lk // splits, d)
    vs = v.reshape(b, splits, lk // splits, v.shape[-1])
    out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(qs, ks, vs, None, True)[:2]
    lse = lse.reshape(b, splits, lq, 1).float()
    w = torch.exp(lse - lse.amax(dim=1, keepdim=True))
    return ((out.float() * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)).to(q.dtype)


def _splits_for(q: torch.Tensor, k: torch.Tensor, batch: int) -> int:
    """Key chunks for this call: :func:`key_splits` on CUDA where they divide the keys."""
    splits = key_splits(batch)
    if q.is_cuda and splits > 1 and k.shape[2] % splits == 0 and not _SPLIT_FAILED:
        return splits
    return 1


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, splits: int) -> torch.Tensor:
    """Run the cross-attention's kernel: in ``splits`` key chunks, else in one pass.

    See :func:`_splits_for`; ``q`` may hold one copy per chunk.
    """
    if splits > 1:
        try:
            return split_attention(q, k, v, splits)
        except RuntimeError as exc:  # no cuDNN attention for this GPU/shape: one pass
            _SPLIT_FAILED.append(str(exc))
            log.info("split-key attention unavailable (%s); attending in one pass", exc)
    return F.scaled_dot_product_attention(q[:, :1], k, v)


def _rope(t: AttnTables, x: torch.Tensor, n_rope: int | None = None) -> torch.Tensor:
    """:func:`rotate` with the tables ``t``."""
    return rotate(x, t.cos, t.sin, t.cis, n_rope)


def _self_attention(attn: Any, t: AttnTables, x: torch.Tensor) -> torch.Tensor:
    """sam2 ``RoPEAttention(q=x, k=x, v=x)`` with one head and real rotary encoding."""
    q = attn.q_proj(x).unsqueeze(1)
    k = attn.k_proj(x).unsqueeze(1)
    v = attn.v_proj(x).unsqueeze(1)
    q = _rope(t, q)
    k = _rope(t, k)
    out = F.scaled_dot_product_attention(q, k, v)
    return attn.out_proj(out.squeeze(1))


def _triton(t: CrossTables, dtype: torch.dtype) -> bool:
    """Tell whether a cross-attention with tables ``t`` runs the Triton kernels.

    They are installed on CUDA, Ampere or newer, and run when computing in bf16.
    """
    return t.key_weights is not None and dtype == torch.bfloat16


def _keys(
    attn: Any,
    t: CrossTables,
    memory: torch.Tensor,
    pos: torch.Tensor | None,
    n_plain: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Compute the cross-attention's rotated keys (B, 1, L, 256) of ``memory + pos``.

    One Triton kernel where installed (:mod:`.triton_kernels`), else PyTorch.
    """
    n_rope = memory.shape[1] - n_plain
    weights = t.key_weights
    if pos is not None and weights is not None and dtype == torch.bfloat16:  # _triton(t, dtype)
        k = torch.ops.napari_sam2_worms.rope_keys(memory, pos, *weights, t.cos, t.sin, n_rope)
        return k.unsqueeze(1)
    keys = memory if pos is None else memory + pos
    return _rope(t, attn.k_proj(keys).unsqueeze(1), n_rope)


def _cross_attention(
    attn: Any,
    t: CrossTables,
    x: torch.Tensor,
    memory: torch.Tensor,
    pos: torch.Tensor | None,
    n_plain: int,
    batch: int,
) -> torch.Tensor:
    """Compute sam2's cross-attention with one head and real rotary encoding.

    sam2 ``RoPEAttention(q=x, k=memory + pos, v=memory, num_k_exclude_rope=n_plain)``
    (``pos`` None: keys are the memory).

    Values are the raw memory tokens; the value and output projections are applied
    once, fused, to the attention output. ``x`` may have batch 1 (shared queries).
    """
    q = attn.q_proj(x)
    k = _keys(attn, t, memory, pos, n_plain, q.dtype)
    splits = _splits_for(q, k, batch)
    if _triton(t, q.dtype):
        # rotated by the Triton kernel, straight into one copy per object and chunk
        q = torch.ops.napari_sam2_worms.rope_copies(q, t.cos, t.sin, batch, splits)
    else:
        q = _rope(t, q.unsqueeze(1))
        if q.shape[0] != batch:
            q = q.expand(batch, -1, -1, -1).contiguous()
    v = memory.unsqueeze(1).to(q.dtype)
    out = _attend(q, k, v, splits).squeeze(1)
    return F.linear(out, t.vo_weight, t.vo_bias)


def _layer(
    layer: Any,
    lt: LayerTables,
    tgt: torch.Tensor,
    memory: torch.Tensor,
    pos: torch.Tensor,
    query_pos: torch.Tensor,
    n_plain: int,
    batch: int,
) -> torch.Tensor:
    """sam2 ``MemoryAttentionLayer.forward`` (eval mode) with the fast attentions."""
    x = layer.norm1(tgt)  # pos_enc_at_attn is False (_supported)
    tgt = tgt + _self_attention(layer.self_attn, lt.self_attn, x)
    x = layer.norm2(tgt)
    if layer.pos_enc_at_cross_attn_queries:
        x = x + query_pos
    keys_pos = pos if layer.pos_enc_at_cross_attn_keys else None
    cross = _cross_attention(
        layer.cross_attn_image, lt.cross_attn, x, memory, keys_pos, n_plain, batch
    )
    tgt = tgt + cross
    x = layer.norm3(tgt)
    return tgt + layer.linear2(_hidden(layer, lt.linear1_bf16, x))


def _hidden(layer: Any, weights: tuple | None, x: torch.Tensor) -> torch.Tensor:
    """Compute ``activation(linear1(x))``.

    On CUDA under bf16 autocast with ReLU, one cuBLASLt call with the bias and ReLU in
    its epilogue (``torch._addmm_activation``): the 2048-wide hidden tensor is written
    once, not written, read and written again (10 objects, H100: the separate ReLU
    took 0.11 ms per layer).
    """
    if (
        weights is None
        or not x.is_cuda
        or not torch.is_autocast_enabled("cuda")
        or torch.get_autocast_dtype("cuda") != torch.bfloat16
    ):
        return layer.activation(layer.linear1(x))
    w, b = weights
    flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
    return torch._addmm_activation(b, flat, w.t()).reshape(*x.shape[:-1], w.shape[0])


def fast_forward(
    self: Any,
    fast: FastAttention,
    curr: Any,
    memory: torch.Tensor,
    curr_pos: Any = None,
    memory_pos: torch.Tensor | None = None,
    num_obj_ptr_tokens: int = 0,
) -> torch.Tensor:
    """Attend as sam2's ``MemoryAttention.forward`` does (a drop-in).

    Sequence-first in and out, as sam2's; ``self`` is the memory attention, ``fast``
    its tables.
    """
    if isinstance(curr, list):
        curr, curr_pos = curr[0], curr_pos[0]
    if curr.shape[0] != fast.tokens or self.training or curr_pos is None or memory_pos is None:
        return fast.sam2_forward(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens)
    batch = curr.shape[1]
    # one image, expanded over the objects: compute the shared part once
    shared = batch > 1 and curr.stride(1) == 0 and curr_pos.stride(1) == 0
    if shared:
        curr, curr_pos = curr[:, :1], curr_pos[:, :1]
    output = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr
    output = output.transpose(0, 1)
    query_pos = curr_pos.transpose(0, 1)
    memory = memory.transpose(0, 1)
    memory_pos = memory_pos.transpose(0, 1)
    for layer, lt in zip(self.layers, fast.layers):
        output = _layer(layer, lt, output, memory, memory_pos, query_pos, num_obj_ptr_tokens, batch)
    return self.norm(output).transpose(0, 1)


def _supported(attention: Any) -> str | None:
    """Why ``attention`` cannot take the fast forward (None: it can)."""
    from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
    from sam2.modeling.sam.transformer import RoPEAttention

    if type(attention) is not MemoryAttention or not attention.batch_first:
        return f"memory attention is {type(attention).__name__}"
    for layer in attention.layers:
        if type(layer) is not MemoryAttentionLayer or layer.pos_enc_at_attn:
            return "unexpected memory-attention layer"
        for attn, repeat in ((layer.self_attn, False), (layer.cross_attn_image, True)):
            if type(attn) is not RoPEAttention or attn.num_heads != 1:
                return "attention is not single-head rotary attention"
            if bool(attn.rope_k_repeat) != repeat:
                return "unexpected rotary key repetition"
    return None


def _key_kernel(device: Any) -> tuple[bool, Any]:
    """(usable, :func:`.triton_kernels.key_weights`): the Triton key kernel on CUDA."""
    if device.type != "cuda":
        return False, None
    try:
        from .triton_kernels import key_weights, usable
    except Exception as exc:  # no triton in this torch build: the PyTorch path
        log.info("memory attention keys without the Triton kernel: %s", exc)
        return False, None
    if not usable(device):  # before Ampere: no bf16 tensor cores for Triton
        return False, None
    return True, key_weights


def install_fast_memory_attention(predictor: Any, state: AccelState | None = None) -> bool:
    """Give ``predictor.memory_attention`` the fast exact forward (idempotent).

    Install before compiling or capturing CUDA graphs (they wrap ``forward``).

    Parameters
    ----------
    predictor : the sam2 video predictor (anything with ``memory_attention``,
        ``parameters()`` and ``sam_image_embedding_size``).
    state : its :class:`~.state.AccelState` (default: the one on ``predictor``, made
        if none); the tables go in ``state.fast_attention``, the forward through
        ``state.patches``.

    Returns
    -------
    bool
        True when the fast forward is on; False, leaving sam2's forward, for a model
        this module does not recognise.
    """
    state = require_state(predictor) if state is None else state
    if state.fast_attention is not None:
        return True
    attention = predictor.memory_attention
    reason = _supported(attention)
    if reason is not None:
        log.info("memory attention keeps sam2's forward: %s", reason)
        return False
    device = next(predictor.parameters()).device
    # the memory attention reads the stride-16 features: image_size / 16 per side
    side = int(getattr(predictor, "sam_image_embedding_size", 64))
    # one set per (head dim, theta): all 8 share one
    tables: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    key_kernel, key_weights = _key_kernel(device)

    def rope(attn: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = tuple(sorted(attn.compute_cis.keywords.items()))
        if key not in tables:
            tables[key] = _rope_tables(attn, side, device)
        return tables[key]

    layers = []
    for layer in attention.layers:
        ca = layer.cross_attn_image
        with torch.no_grad():
            w_out = ca.out_proj.weight.detach().double()
            vo_weight = (w_out @ ca.v_proj.weight.detach().double()).float()
            vo_bias = (
                w_out @ ca.v_proj.bias.detach().double() + ca.out_proj.bias.detach().double()
            ).float()
        cross = CrossTables(*rope(ca), vo_weight, vo_bias)
        if key_kernel:
            cross.key_weights = key_weights(ca)
        lt = LayerTables(AttnTables(*rope(layer.self_attn)), cross)
        if layer.activation is F.relu and device.type == "cuda":
            lt.linear1_bf16 = (
                layer.linear1.weight.detach().to(torch.bfloat16).contiguous(),
                layer.linear1.bias.detach().to(torch.bfloat16).contiguous(),
            )
        layers.append(lt)
    fast = FastAttention(sam2_forward=attention.forward, tokens=side * side, layers=layers)

    def forward(
        curr: Any,
        memory: torch.Tensor,
        curr_pos: Any = None,
        memory_pos: torch.Tensor | None = None,
        num_obj_ptr_tokens: int = 0,
    ) -> torch.Tensor:
        return fast_forward(attention, fast, curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens)

    state.patches.set(attention, "forward", forward)
    state.fast_attention = fast
    log.info("memory attention: fast exact forward (%dx%d tokens)", side, side)
    return True


def float32_memory(predictor: Any, state: AccelState | None = None) -> None:
    """Cast the memory to float32 before memory attention (CPU/MPS; idempotent).

    sam2 stores memory features in bfloat16 and relies on CUDA autocast; elsewhere a
    memory made only of them (e.g. backward from a late frame, when no object pointer
    qualifies) hits a float32 layer.
    """
    state = require_state(predictor) if state is None else state
    if state.fp32_memory:
        return
    attention = predictor.memory_attention
    forward = attention.forward

    def fp32_forward(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        return forward(
            curr,
            memory.float(),
            curr_pos,
            None if memory_pos is None else memory_pos.float(),
            num_obj_ptr_tokens,
        )

    state.patches.set(attention, "forward", fp32_forward)
    state.fp32_memory = True

"""The fast memory-attention forward computes sam2's function (float32, CPU)."""

from __future__ import annotations

import copy
import types

import numpy as np
import pytest
import torch

from napari_sam2_worms.backends.sam2.accel.memory_attention import (
    install_fast_memory_attention,
    rotate,
)
from napari_sam2_worms.backends.sam2.accel.state import (
    state_of,
)

SIDE = 8  # 8x8 feature map: 64 tokens (the model uses 64x64; same code)
N = SIDE * SIDE


def memory_attention(heads: int = 1, pos_at_input: bool = True):
    """sam2 1.1.0's memory attention as in its tiny config, small feature map, with
    weights of a magnitude that makes every part matter."""
    from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
    from sam2.modeling.sam.transformer import RoPEAttention

    torch.manual_seed(0)
    layer = MemoryAttentionLayer(
        activation="relu",
        cross_attention=RoPEAttention(
            embedding_dim=256,
            num_heads=heads,
            rope_k_repeat=True,
            feat_sizes=[SIDE, SIDE],
            kv_in_dim=64,
            dropout=0.1,
        ),
        d_model=256,
        dim_feedforward=2048,
        dropout=0.1,
        pos_enc_at_attn=False,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        self_attention=RoPEAttention(
            embedding_dim=256, num_heads=1, feat_sizes=[SIDE, SIDE], dropout=0.1
        ),
    )
    ma = MemoryAttention(d_model=256, pos_enc_at_input=pos_at_input, layer=layer, num_layers=4)
    for p in ma.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return ma.eval()


def holder(ma, side: int = SIDE):
    """The parts of a predictor the installer reads."""
    return types.SimpleNamespace(
        memory_attention=ma, parameters=ma.parameters, sam_image_embedding_size=side
    )


def inputs(batch: int, frames: int, pointers: int, shared: bool):
    g = torch.Generator().manual_seed(batch * 10 + frames)
    if shared:  # as sam2 passes them: one image expanded over the objects
        curr = torch.randn(N, 1, 256, generator=g).expand(N, batch, 256)
        pos = torch.randn(N, 1, 256, generator=g).expand(N, batch, 256)
    else:
        curr = torch.randn(N, batch, 256, generator=g)
        pos = torch.randn(N, batch, 256, generator=g)
    m = frames * N + pointers
    mem = torch.randn(m, batch, 64, generator=g)
    mpos = torch.randn(m, batch, 64, generator=g)
    return curr, mem, pos, mpos, pointers


@pytest.mark.parametrize(
    "batch, frames, pointers, shared",
    [(3, 3, 8, True), (2, 2, 0, False), (1, 1, 4, True), (4, 7, 64, True)],
)
def test_fast_forward_equals_sam2(batch, frames, pointers, shared):
    ref = memory_attention()
    fast = copy.deepcopy(ref)
    installed = holder(fast)
    assert install_fast_memory_attention(installed)

    def sam2_forward_unused(*a, **k):
        raise AssertionError("the fast forward fell back to sam2's")

    state_of(installed).fast_attention.sam2_forward = sam2_forward_unused
    curr, mem, pos, mpos, n_ptr = inputs(batch, frames, pointers, shared)
    with torch.inference_mode():
        want = ref([curr], mem, [pos], mpos, n_ptr)
        got = fast([curr], mem, [pos], mpos, n_ptr)
    assert got.shape == want.shape == (N, batch, 256)
    err = (got - want).abs().max().item()
    assert err <= 1e-4 * want.abs().max().item(), err
    # objects stay independent: each row is its own object's result
    if batch > 1 and not shared:
        with torch.inference_mode():
            one = fast(curr[:, 1:2], mem[:, 1:2], pos[:, 1:2], mpos[:, 1:2], n_ptr)
        assert torch.allclose(one[:, 0], got[:, 1], atol=1e-4)


@pytest.mark.parametrize("compiling", [False, True])
def test_rotate_matches_sam2_rotary_encoding(compiling, monkeypatch):
    """Both forms: complex (eager) and real arithmetic (what the compiler traces)."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling)
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

    freqs = compute_axial_cis(dim=32, end_x=SIDE, end_y=SIDE)
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 1, N, 32, generator=g)
    k = torch.randn(2, 1, 3 * N, 32, generator=g)
    want_q, want_k = apply_rotary_enc(q, k, freqs, repeat_freqs_k=True)
    cos, sin = freqs.real.contiguous(), freqs.imag.contiguous()
    assert torch.allclose(rotate(q, cos, sin), want_q, atol=1e-6)
    assert torch.allclose(rotate(k, cos, sin), want_k, atol=1e-6)
    assert not torch.allclose(rotate(k, cos, sin), k, atol=1e-3)  # it does rotate
    # keys followed by object-pointer tokens that sam2 leaves unrotated
    kp = torch.randn(2, 1, 3 * N + 5, 32, generator=g)
    _, want_kp = apply_rotary_enc(q, kp[:, :, : 3 * N].clone(), freqs, repeat_freqs_k=True)
    got = rotate(kp, cos, sin, n_rope=3 * N)
    assert torch.allclose(got[:, :, : 3 * N], want_kp, atol=1e-6)
    assert torch.equal(got[:, :, 3 * N :], kp[:, :, 3 * N :])


def test_other_feature_size_falls_back_to_sam2():
    ref = memory_attention()
    fast = copy.deepcopy(ref)
    installed = holder(fast, side=SIDE * 2)
    assert install_fast_memory_attention(installed)  # tables for 16x16
    calls = []
    tables = state_of(installed).fast_attention
    sam2_forward = tables.sam2_forward
    tables.sam2_forward = lambda *a: calls.append(1) or sam2_forward(*a)
    curr, mem, pos, mpos, n_ptr = inputs(2, 2, 4, True)
    with torch.inference_mode():
        got = fast([curr], mem, [pos], mpos, n_ptr)
        want = ref([curr], mem, [pos], mpos, n_ptr)
    assert calls == [1]
    assert torch.allclose(got, want)


def test_unrecognised_model_keeps_sam2_forward():
    ma = memory_attention(heads=2)
    forward = ma.forward
    installed = holder(ma)
    assert not install_fast_memory_attention(installed)
    assert ma.forward == forward and "forward" not in vars(ma)
    assert state_of(installed).fast_attention is None and not state_of(installed).patches


def test_fast_forward_compiles_in_one_graph():
    """As :mod:`accel.compile` compiles it on CUDA (``fullgraph=True``, dynamic shapes):
    dynamo traces the installed forward, tables and all, without a graph break (the
    eager backend: tracing only), and the traced forward computes sam2's function."""
    ref = memory_attention()
    fast = copy.deepcopy(ref)
    assert install_fast_memory_attention(holder(fast))
    torch._dynamo.reset()
    compiled = torch.compile(fast.forward, backend="eager", fullgraph=True, dynamic=True)
    curr, mem, pos, mpos, n_ptr = inputs(3, 2, 8, True)
    with torch.inference_mode():
        want = ref([curr], mem, [pos], mpos, n_ptr)
        got = compiled([curr], mem, [pos], mpos, n_ptr)
    assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()


def test_install_is_idempotent():
    ma = memory_attention()
    predictor = holder(ma)
    assert install_fast_memory_attention(predictor)
    first = ma.forward
    assert install_fast_memory_attention(predictor)
    assert ma.forward is first and len(state_of(predictor).patches) == 1


@pytest.mark.slow
def test_backend_tracks_the_same_with_and_without(sam2_random, small_plate):
    """Through the backend (random weights, 256 px): the fast forward changes no mask
    beyond float rounding, and the switch turns it off."""
    from napari_sam2_worms.backends.base import ObjectPrompts
    from napari_sam2_worms.backends.sam2.accel.cpu import configure_cpu
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    video = small_plate.video[:4]
    masks = {}
    for fast in (False, True):
        # a fresh copy of the random weights (the shared predictor may carry the forward)
        torch.manual_seed(0)
        predictor = build_model("sam2.1_hiera_tiny", "cpu", image_size=256)
        predictor.load_state_dict(sam2_random.predictor.state_dict())
        # float32: the CPU's bf16 speed-ups (compared with float32 in
        # test_sam2_cpu_speedups) would round the two attentions differently
        configure_cpu(predictor, bf16_attention=False, bf16_encoder=False, bf16=False)
        be = Sam2Backend(device="cpu", predictor=predictor, fast_attention=fast)
        be.open(video)
        installed = state_of(predictor).fast_attention
        assert (installed is not None) == fast
        if fast:  # the fast forward runs, not sam2's behind it
            installed.sam2_forward = None
        for k in range(2):
            xy = small_plate.centerlines[0, k, 24][None].astype(np.float32)
            be.set_prompts(0, k + 1, ObjectPrompts(points=xy, labels=np.array([1], np.int32)))
        masks[fast] = {(r.frame, o): m for r in be.propagate(0, 3) for o, m in r.masks.items()}
        be.close()
    assert masks[True].keys() == masks[False].keys() and len(masks[True]) == 8
    assert any(m.any() for m in masks[False].values())  # not all empty
    for key, a in masks[False].items():
        b = masks[True][key]
        union = (a | b).sum()
        assert union == 0 or (a & b).sum() / union >= 0.99, key


@pytest.mark.slow
def test_backend_default_installs_only_on_cuda():
    """PyTorch's CPU attention has no fast kernel for 64-wide values (3x slower,
    measured): by default the CPU keeps sam2's forward."""
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    predictor = build_model("sam2.1_hiera_tiny", "cpu", image_size=256)
    be = Sam2Backend(device="cpu", predictor=predictor)
    be.open(np.zeros((2, 32, 32), np.uint8))
    state = state_of(predictor)
    assert state.fast_attention is None and state.fp32_memory  # the CPU's float32 memory
    be.close()


def test_split_keys_only_where_few_objects_and_only_on_cuda(monkeypatch):
    """The split-key kernel is for CUDA with few objects; the CPU attends in one pass."""
    import napari_sam2_worms.backends.sam2.accel.memory_attention as sa

    assert [sa.key_splits(b) for b in (1, 2, 10, 11, 50)] == [4, 2, 2, 1, 1]

    def never(*a):
        raise AssertionError("split attention on the CPU")

    monkeypatch.setattr(sa, "split_attention", never)
    q, k, v = torch.randn(1, 1, 8, 16), torch.randn(1, 1, 12, 16), torch.randn(1, 1, 12, 4)
    splits = sa._splits_for(q, k, 1)
    assert splits == 1  # 4 chunks would divide the 12 keys, but this is the CPU
    torch.testing.assert_close(
        sa._attend(q, k, v, splits), torch.nn.functional.scaled_dot_product_attention(q, k, v)
    )

"""CUDA graphs and torch.compile give the eager engine's masks (random weights)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_sam2_worms.backends.sam2.accel import state_of  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _track(cuda_graphs: bool, compile: bool, plate, fast: bool = True) -> tuple[list, object]:
    from napari_sam2_worms.backends.base import ObjectPrompts
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    torch.manual_seed(0)
    pred = build_model("sam2.1_hiera_tiny", "cuda")
    be = Sam2Backend(
        predictor=pred,
        device="cuda",
        cuda_graphs=cuda_graphs,
        compile=compile,
        fast_attention=fast,
    )
    be.open(plate.video)
    for k in range(3):
        xy = plate.centerlines[0, k, 24][None]
        be.set_prompts(0, k + 1, ObjectPrompts(points=xy, labels=np.array([1])))
    out = []  # per-object masks before overlaps are resolved (argmax flips ties)
    be.logits_hook = lambda f, ids, lg: out.append((lg[:, 0] > 0).cpu().numpy())
    for _ in be.propagate(0, len(plate.video) - 1):
        pass
    return out, pred


def _iou(a: list, b: list) -> float:
    vals = []
    for x, y in zip(a, b):
        for o in range(len(x)):
            u = (x[o] | y[o]).sum()
            if u:
                vals.append((x[o] & y[o]).sum() / u)
    return float(np.mean(vals))


@pytest.fixture(scope="module")
def plate():
    from napari_sam2_worms.synthetic import make_plate

    return make_plate(n_frames=40, height=240, width=320, n_worms=3, seed=2)


@pytest.fixture(scope="module")
def eager(plate):
    return _track(False, False, plate)[0]


def test_cuda_graphs_replay_and_match_eager(plate, eager):
    graphed, pred = _track(True, False, plate)
    graphs = state_of(pred).graphs
    replays = {g.name: g.replays for g in graphs}
    failed = {g.name: len(g.failed) for g in graphs}
    assert replays["image_encoder"] >= 30 and replays["memory_attention"] >= 15, (replays, failed)
    iou = _iou(graphed, eager)
    assert iou > 0.99, (iou, replays)


def test_compiled_matches_eager(plate, eager):
    compiled, pred = _track(True, True, plate)
    state = state_of(pred)
    assert state.compiled == "default" and state.fast_attention is not None
    assert state.graphs and state.depthwise_convs > 0  # graphs wrap the compiled forwards
    iou = _iou(compiled, eager)
    assert iou > 0.9, iou


def test_fast_attention_matches_sam2_forward(plate, eager):
    """The default eager engine (fast memory attention) against sam2's own forward."""
    plain, pred = _track(False, False, plate, fast=False)
    assert state_of(pred).fast_attention is None
    iou = _iou(eager, plain)
    assert iou > 0.99, iou


@pytest.mark.parametrize("batch", [1, 2, 10])
def test_split_key_attention_matches_one_pass(batch):
    """Keys cut into chunks (one cuDNN call) and merged by log-sum-exp: the attention
    of the memory-attention shape, up to bf16 rounding, against float32."""
    import torch.nn.functional as F

    from napari_sam2_worms.backends.sam2.accel.memory_attention import (
        _SPLIT_FAILED,
        key_splits,
        split_attention,
    )

    g = torch.Generator(device="cuda").manual_seed(0)
    lk = 7 * 4096 + 64
    q = torch.randn(batch, 1, 4096, 256, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(batch, 1, lk, 256, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(batch, 1, lk, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    splits = key_splits(batch)
    assert splits > 1
    got = split_attention(q, k, v, splits)
    assert got.shape == ref.shape and got.dtype == torch.bfloat16
    assert float((got.float() - ref).abs().max() / ref.abs().max()) < 0.02
    assert not _SPLIT_FAILED


def test_key_kernel_matches_pytorch_keys():
    """The Triton key kernel against add + projection + rotation in PyTorch (bf16
    autocast, sam2's shapes: 10 objects, 7 memory frames of 64x64, 64 pointer tokens)."""
    from napari_sam2_worms.backends.sam2.accel import memory_attention as sa
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    torch.manual_seed(0)
    p = build_model("sam2.1_hiera_tiny", "cuda")
    assert sa.install_fast_memory_attention(p)
    ca = p.memory_attention.layers[1].cross_attn_image
    tables = state_of(p).fast_attention.layers[1].cross_attn
    assert tables.key_weights is not None
    n = 7 * 4096 + 64
    memory = torch.randn(n, 10, 64, device="cuda").to(torch.bfloat16).transpose(0, 1)
    pos = torch.randn(n, 10, 64, device="cuda").transpose(0, 1)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        got = sa._keys(ca, tables, memory, pos, 64, torch.bfloat16)
        ref = sa._rope(tables, ca.k_proj(memory + pos).unsqueeze(1), n - 64)
    assert got.shape == ref.shape == (10, 1, n, 256) and got.dtype == ref.dtype
    # sam2 rounds the projected keys to bf16 before rotating them, the kernel does not:
    # both differ from exact keys by bf16 rounding, i.e. relative to the keys' scale
    err = (got.float() - ref.float()).abs()
    scale = ref.float().abs()
    assert float(err.max() / scale.max()) < 0.01, float(err.max() / scale.max())
    assert float(err.mean() / scale.mean()) < 0.005, float(err.mean() / scale.mean())
    from napari_sam2_worms.backends.sam2.accel.triton_kernels import FAILED

    assert not FAILED  # the Triton kernel ran (no PyTorch fallback)


def test_mask_stage_kernel_matches_sam2_modules():
    """The fused (convolution, layer norm, GELU) stages of the mask downsampler against
    sam2's modules under bf16 autocast, at the sizes sam2 feeds them."""
    from napari_sam2_worms.backends.sam2.accel.triton_kernels import mask_stage
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    torch.manual_seed(0)
    p = build_model("sam2.1_hiera_tiny", "cuda")
    enc = p.memory_encoder.mask_downsampler.encoder
    x = torch.rand(10, 1, 1024, 1024, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for conv, norm, act in ((enc[0], enc[1], enc[2]), (enc[3], enc[4], enc[5])):
            ref = act(norm(conv(x))).float()
            got = mask_stage(x, conv.weight, conv.bias, norm.weight, norm.bias, norm.eps)
            assert got.shape == ref.shape and got.dtype == torch.bfloat16
            assert float((got.float() - ref).abs().max()) < 0.05 * float(ref.abs().max())
            x = ref.to(torch.bfloat16)
    from napari_sam2_worms.backends.sam2.accel.triton_kernels import FAILED

    assert not FAILED

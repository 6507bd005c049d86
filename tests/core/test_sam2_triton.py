"""The Triton key kernel (add, project, rotate) against the PyTorch path.

Run by Triton's CPU interpreter in a subprocess (``TRITON_INTERPRET=1`` must be set
before the kernel is defined), in float32 products: the interpreter has no bfloat16
matrix product. This checks the kernel's indexing (strides, pairs, rotation tables,
tokens left unrotated); ``tests/gpu`` runs it in bfloat16 on a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")
pytest.importorskip("sam2")


def _interpret(script: str) -> None:
    """Run ``script`` in a subprocess under Triton's CPU interpreter; it must end with
    the kernels having run (nothing fell back to PyTorch)."""
    check = (
        "\nfrom napari_sam2_worms.backends.sam2.accel.triton_kernels import FAILED\n"
        "assert not FAILED, FAILED\nprint('ok')\n"
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run(
        [sys.executable, "-c", script + check],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


SCRIPT = textwrap.dedent(
    """
    import torch
    from napari_sam2_worms.backends.sam2.accel import memory_attention as sa
    from napari_sam2_worms.backends.sam2.accel.triton_kernels import key_weights, rope_keys
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    torch.manual_seed(0)
    p = build_model("sam2.1_hiera_tiny", "cpu", image_size=256)
    ca = p.memory_attention.layers[2].cross_attn_image
    side = 16
    cos, sin, cis = sa._rope_tables(ca, side, "cpu")
    b, frames, n_plain = 3, 2, 8
    n = frames * side * side + n_plain
    # sequence-first, as sam2 builds the memory; the kernel reads it transposed
    # eighths: memory + pos is exact in bf16 (the interpreter does not round it)
    memory = (torch.randint(-16, 17, (n, b, 64)) / 8).to(torch.bfloat16).transpose(0, 1)
    pos = (torch.randint(-16, 17, (n, 1, 64)) / 8).expand(n, b, 64).transpose(0, 1)
    we, wo, be, bo = key_weights(ca)
    got = rope_keys(memory, pos, we.float(), wo.float(), be, bo, cos, sin, n - n_plain)
    assert got.shape == (b, n, 256) and got.dtype == torch.bfloat16, got.shape
    w = ca.k_proj.weight.detach().to(torch.bfloat16).float()
    keys = (memory.float() + pos).to(torch.bfloat16).float()
    k = torch.nn.functional.linear(keys, w, ca.k_proj.bias.detach()).unsqueeze(1)
    ref = sa.rotate(k, cos, sin, cis, n - n_plain).squeeze(1)
    err = (got.float() - ref).abs() / ref.abs().clamp_min(1.0)
    assert float(err.max()) < 2 ** -7, float(err.max())  # bf16 rounding of the keys
    # the object-pointer tokens are projected, not rotated
    plain = torch.nn.functional.linear(keys[:, -n_plain:], w, ca.k_proj.bias.detach())
    assert float((got[:, -n_plain:].float() - plain).abs().max()) < 0.05
    assert float((got[:, :side].float() - k[:, 0, :side]).abs().max()) > 0.1  # rotated
    """
)


def test_key_kernel_matches_pytorch_in_the_interpreter():
    _interpret(SCRIPT)


STAGE_SCRIPT = textwrap.dedent(
    """
    import torch
    from napari_sam2_worms.backends.sam2.accel.triton_kernels import mask_stage
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    torch.manual_seed(0)
    p = build_model("sam2.1_hiera_tiny", "cpu", image_size=256)
    enc = p.memory_encoder.mask_downsampler.encoder
    for conv, norm, act in ((enc[0], enc[1], enc[2]), (enc[3], enc[4], enc[5])):
        with torch.no_grad():  # random layer norms, not sam2's identity initialisation
            norm.weight.normal_()
            norm.bias.normal_()
        for h, w in ((32, 32), (17, 30)):  # odd sizes: the last row has no bottom tap
            x = torch.randn(2, conv.in_channels, h, w)
            with torch.no_grad():
                ref = act(norm(conv(x)))
                got = mask_stage(x, conv.weight, conv.bias, norm.weight, norm.bias, norm.eps)
            assert got.shape == ref.shape and got.dtype == torch.bfloat16, got.shape
            err = float((got.float() - ref).abs().max())
            assert err < 0.02 * float(ref.abs().max()), err  # bf16 output
    """
)


def test_mask_stage_kernel_matches_sam2_modules_in_the_interpreter():
    _interpret(STAGE_SCRIPT)


def test_fused_mask_stages_installs_on_the_few_channel_stages_only():
    """sam2 tiny's mask downsampler: the 1->4 and 4->16 stages; off CUDA (or without
    bf16 autocast) the downsampler keeps sam2's modules, so the output is unchanged."""
    import torch

    from napari_sam2_worms.backends.sam2.accel.convs import fused_mask_stages
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    torch.manual_seed(0)
    p = build_model("sam2.1_hiera_tiny", "cpu", image_size=256)
    md = p.memory_encoder.mask_downsampler
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        before = md(x)
        assert fused_mask_stages(p.memory_encoder) == 2
        assert fused_mask_stages(p.memory_encoder) == 0  # idempotent
        torch.testing.assert_close(md(x), before)


COPIES_SCRIPT = textwrap.dedent(
    """
    import torch
    from napari_sam2_worms.backends.sam2.accel import memory_attention as sa
    from napari_sam2_worms.backends.sam2.accel.triton_kernels import rope_copies
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    torch.manual_seed(0)
    p = build_model("sam2.1_hiera_tiny", "cpu", image_size=256)
    ca = p.memory_attention.layers[0].cross_attn_image
    cos, sin, cis = sa._rope_tables(ca, 16, "cpu")
    x = torch.randn(3, 256, 256).to(torch.bfloat16)
    ref = sa.rotate(x.unsqueeze(1), cos, sin, cis)  # (3, 1, 256, 256) bf16
    got = rope_copies(x, cos, sin, 3, 2)
    assert got.shape == (3, 2, 256, 256) and got.dtype == torch.bfloat16, got.shape
    for j in range(2):
        torch.testing.assert_close(got[:, j].float(), ref[:, 0].float(), atol=0.02, rtol=0.01)
    one = rope_copies(x[:1], cos, sin, 4, 1)  # one shared query block, four objects
    assert one.shape == (4, 1, 256, 256)
    for b in range(4):
        torch.testing.assert_close(one[b, 0].float(), ref[0, 0].float(), atol=0.02, rtol=0.01)
    """
)


def test_rope_copies_kernel_matches_rotate_in_the_interpreter():
    _interpret(COPIES_SCRIPT)


def test_kernels_fall_back_to_pytorch_where_they_cannot_run(monkeypatch):
    """A kernel that cannot compile or launch here (here: CPU tensors, no interpreter)
    is replaced, once and for good, by the same function in PyTorch, which must give
    what sam2's modules give; a propagation never stops on it."""
    import torch

    from napari_sam2_worms.backends.sam2.accel import memory_attention as sa
    from napari_sam2_worms.backends.sam2.accel import triton_kernels as st
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    monkeypatch.setattr(st, "FAILED", {})
    torch.manual_seed(0)
    p = build_model("sam2.1_hiera_tiny", "cpu", image_size=256)
    ca = p.memory_attention.layers[1].cross_attn_image
    cos, sin, cis = sa._rope_tables(ca, 16, "cpu")
    n_plain, n = 8, 2 * 256 + 8
    memory = (torch.randint(-16, 17, (n, 2, 64)) / 8).to(torch.bfloat16).transpose(0, 1)
    pos = (torch.randint(-16, 17, (n, 2, 64)) / 8).transpose(0, 1)
    we, wo, be, bo = st.key_weights(ca)
    with torch.no_grad():
        keys = st.rope_keys(memory, pos, we, wo, be, bo, cos, sin, n - n_plain)
        assert "rope_keys" in st.FAILED
        w = ca.k_proj.weight.to(torch.bfloat16).float()
        k = torch.nn.functional.linear((memory.float() + pos), w, ca.k_proj.bias).unsqueeze(1)
        ref = sa.rotate(k, cos, sin, cis, n - n_plain).squeeze(1)
        torch.testing.assert_close(keys.float(), ref, atol=0.05, rtol=0.01)

        q = torch.randn(1, 256, 256).to(torch.bfloat16)
        copies = st.rope_copies(q, cos, sin, 3, 2)  # batch-1 queries shared by 3 objects
        assert copies.shape == (3, 2, 256, 256) and "rope_copies" in st.FAILED
        qref = sa.rotate(q.unsqueeze(1), cos, sin, cis)[0, 0].float()
        for b in range(3):
            for j in range(2):
                torch.testing.assert_close(copies[b, j].float(), qref, atol=0.02, rtol=0.01)

        enc = p.memory_encoder.mask_downsampler.encoder
        conv, norm, act = enc[3], enc[4], enc[5]
        norm.weight.normal_()
        x = torch.randn(2, 4, 34, 30)
        got = st.mask_stage(x, conv.weight, conv.bias, norm.weight, norm.bias, norm.eps)
        assert "mask_stage" in st.FAILED
        expect = act(norm(conv(x)))
        torch.testing.assert_close(got.float(), expect, atol=0.03, rtol=0.01)

# ruff: noqa: E501, B023
"""The Triton kernels of the GPU path against what they replace (ms per call, CUDA).

- keys: add + key projection + rotary encoding of the cross-attention's ~28,700
  memory tokens per object (``rope_keys``), against PyTorch eager and compiled, for
  several block sizes;
- mask stages: sam2's mask downsampler's first stages (3x3 stride-2 convolution,
  layer norm, GELU; 1 -> 4 and 4 -> 16 channels), fused (``mask_stage``), against
  cuDNN + PyTorch eager and compiled, and cuDNN's convolution alone in both layouts.

Random weights, bf16 autocast; the max abs difference to PyTorch is printed.

    export PYTHONPATH=$PWD/.devsite:$PWD/src
    python3 benchmarks/sam2_fused_kernels_bench.py --objects 1,10,50
"""

from __future__ import annotations

import argparse

from sam2_attention_bench import _time  # this folder is on the path when run as a script


def keys(p, batches: list[int]) -> None:
    import torch

    from napari_sam2_worms.backends.sam2.accel import memory_attention as sa
    from napari_sam2_worms.backends.sam2.accel import state_of
    from napari_sam2_worms.backends.sam2.accel import triton_kernels as st

    sa.install_fast_memory_attention(p)
    ca = p.memory_attention.layers[1].cross_attn_image
    tables = state_of(p).fast_attention.layers[1].cross_attn
    w = tables.key_weights
    print(
        "\n| objects | PyTorch eager | compiled | kernel, tokens per program / warps ... | max abs diff |"
    )
    print("|---|---|---|---|---|")
    for b in batches:
        n = 7 * 4096 + 64
        memory = torch.randn(n, b, 64, device="cuda").to(torch.bfloat16).transpose(0, 1)
        pos = torch.randn(n, b, 64, device="cuda").transpose(0, 1)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):

            def ref():
                return sa._rope(tables, ca.k_proj(memory + pos).unsqueeze(1), n - 64)

            t_ref, t_comp = _time(ref, 30), _time(torch.compile(ref), 30)
            cells = []
            for bm in (32, 64, 128):
                for nw in (4, 8):
                    st.BLOCK_TOKENS, st.NUM_WARPS = bm, nw
                    t = _time(
                        lambda: st.rope_keys(memory, pos, *w, tables.cos, tables.sin, n - 64),
                        30,
                    )
                    cells.append(f"{bm}/{nw}: {t:.3f}")
            st.BLOCK_TOKENS, st.NUM_WARPS = 64, 8
            got = st.rope_keys(memory, pos, *w, tables.cos, tables.sin, n - 64)
            diff = float((got.float() - ref().squeeze(1).float()).abs().max())
        print(f"| {b} | {t_ref:.3f} | {t_comp:.3f} | {', '.join(cells)} | {diff:.3f} |", flush=True)


def mask_stages(p, batches: list[int]) -> None:
    import torch
    import torch.nn.functional as F

    from napari_sam2_worms.backends.sam2.accel import triton_kernels as st

    enc = p.memory_encoder.mask_downsampler.encoder
    print(
        "\n| objects | stage | cuDNN conv NCHW / channels-last | conv+LN+GELU eager | compiled | fused, 128 / 256 / 512 px per program | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|")
    for b in batches:
        x = torch.rand(b, 1, 1024, 1024, device="cuda")
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            for conv, norm, act in ((enc[0], enc[1], enc[2]), (enc[3], enc[4], enc[5])):
                xb = x.to(torch.bfloat16)
                wb, bb = conv.weight.to(torch.bfloat16), conv.bias.to(torch.bfloat16)
                xc = xb.contiguous(memory_format=torch.channels_last)
                wc = wb.contiguous(memory_format=torch.channels_last)
                t_nchw = _time(lambda: F.conv2d(xb, wb, bb, 2, 1), 30)
                t_cl = _time(lambda: F.conv2d(xc, wc, bb, 2, 1), 30)

                def ref():
                    return act(norm(conv(x)))

                t_ref, t_comp = _time(ref, 30), _time(torch.compile(ref), 30)
                cells = []
                for bp in (128, 256, 512):
                    st.BLOCK_PIXELS = bp
                    args = (x, conv.weight, conv.bias, norm.weight, norm.bias, norm.eps)
                    cells.append(f"{_time(lambda: st.mask_stage(*args), 30):.3f}")
                st.BLOCK_PIXELS = 512
                got = st.mask_stage(x, conv.weight, conv.bias, norm.weight, norm.bias, norm.eps)
                diff = float((got.float() - ref().float()).abs().max())
                print(
                    f"| {b} | {conv.in_channels} -> {conv.out_channels} | {t_nchw:.3f} / {t_cl:.3f} "
                    f"| {t_ref:.3f} | {t_comp:.3f} | {' / '.join(cells)} | {diff:.3f} |",
                    flush=True,
                )
                x = ref()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", default="1,10,50")
    args = p.parse_args(argv)
    import torch

    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    batches = [int(v) for v in args.objects.split(",")]
    torch.manual_seed(0)
    predictor = build_model("sam2.1_hiera_tiny", "cuda")
    predictor.requires_grad_(False)
    print(torch.cuda.get_device_name(), torch.__version__)
    keys(predictor, batches)
    mask_stages(predictor, batches)


if __name__ == "__main__":
    main()

# ruff: noqa: E501
"""Two kernels behind the engine's choices, timed alone on the GPU.

1. The memory attention's cross-attention (4,096 queries, 7 x 4,096 + 64 keys, query
   and key width 256, value width 64, bf16): cuDNN in one pass, FlashAttention with the
   values padded to 256 (it has no kernel for narrower values), and the keys split into
   2-16 chunks attended in one cuDNN call and merged by log-sum-exp
   (``backends/sam2/accel/memory_attention.py: split_attention``). Error: relative max difference
   from float32.
2. The memory encoder's 7x7 depthwise convolution on (objects, 256, 64, 64): default
   (NCHW) and channels-last input (``backends/sam2/accel/convs.py``), with and without
   ``cudnn.benchmark``; then sam2's whole memory encoder both ways.

GPU (docs/performance.md)::

    python benchmarks/sam2_kernels_bench.py --objects 1,2,10,50
"""

from __future__ import annotations

import argparse
import time

from sam2_attention_bench import _time  # this folder is on the path when run as a script


def attention(batches: list[int]) -> None:
    print(
        "\n| objects | cuDNN one pass ms | Flash, values padded | split 2 | split 4 | split 8 | split 16 | engine's choice |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for b in batches:
        print(_attention_row(b), flush=True)


def _attention_row(b: int) -> str:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from napari_sam2_worms.backends.sam2.accel.memory_attention import key_splits, split_attention

    lk = 7 * 4096 + 64
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(b, 1, 4096, 256, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(b, 1, lk, 256, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(b, 1, lk, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    ref = F.scaled_dot_product_attention(q[:1].float(), k[:1].float(), v[:1].float())

    def cell(fn) -> str:
        try:
            ms = _time(fn, 20)
            err = float((fn()[:1].float() - ref).abs().max() / ref.abs().max())
        except RuntimeError as exc:
            return f"failed: {str(exc).splitlines()[0][:40]}"
        return f"{ms:.3f} ({err:.4f})"

    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        one = cell(lambda: F.scaled_dot_product_attention(q, k, v))
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        flash = cell(lambda: F.scaled_dot_product_attention(q, k, F.pad(v, (0, 192)))[..., :64])
    splits = [cell(lambda s=s: split_attention(q, k, v, s)) for s in (2, 4, 8, 16)]
    return f"| {b} | {one} | {flash} | {' | '.join(splits)} | {key_splits(b)} |"


def depthwise(batches: list[int], model: str) -> None:
    import torch
    import torch.nn.functional as F

    from napari_sam2_worms.backends.sam2.accel.convs import channels_last_depthwise
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    print(
        "\n| objects | depthwise 7x7 NCHW ms | channels-last | NCHW, cudnn.benchmark | channels-last, cudnn.benchmark |"
    )
    print("|---|---|---|---|---|")
    w = torch.randn(256, 1, 7, 7, device="cuda")
    bias = torch.randn(256, device="cuda")
    for b in batches:
        x = torch.randn(b, 256, 64, 64, device="cuda")
        xl = x.contiguous(memory_format=torch.channels_last)
        row = []
        with torch.autocast("cuda", dtype=torch.bfloat16):
            for bench in (False, True):
                torch.backends.cudnn.benchmark = bench
                for inp in (x, xl):
                    row.append(_time(lambda i=inp: F.conv2d(i, w, bias, padding=3, groups=256), 20))
        torch.backends.cudnn.benchmark = False
        print(f"| {b} | " + " | ".join(f"{ms:.3f}" for ms in row) + " |", flush=True)

    torch.manual_seed(0)
    pred = build_model(model, "cuda")
    pred.requires_grad_(False)
    me = pred.memory_encoder
    print("\n| objects | memory encoder ms, default | depthwise channels-last |\n|---|---|---|")
    rows = {}
    for layout in ("default", "channels-last"):
        if layout == "channels-last":
            channels_last_depthwise(me)
        for b in batches:
            feats = torch.randn(b, 256, 64, 64, device="cuda")
            masks = torch.randn(b, 1, 1024, 1024, device="cuda")
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                rows.setdefault(b, []).append(
                    _time(lambda f=feats, m=masks: me(f, m, skip_mask_sigmoid=True), 20)
                )
    for b, (a, c) in rows.items():
        print(f"| {b} | {a:.3f} | {c:.3f} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", default="1,2,10,50")
    p.add_argument("--model", default="sam2.1_hiera_tiny")
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    batches = [int(x) for x in args.objects.split(",")]
    print(torch.cuda.get_device_name(), "torch", torch.__version__, time.strftime("%Y-%m-%d"))
    attention(batches)
    depthwise(batches, args.model)


if __name__ == "__main__":
    main()

"""Memory attention alone: sam2's forward vs ours (:mod:`.accel.memory_attention`), side by side.

Random weights of the chosen model, bf16 autocast on CUDA, sam2's tracking shapes:
4,096 queries (one 64x64 frame, the same image for every object), 7 memory frames of
4,096 tokens and 16 object pointers (64 tokens), for several object counts. Prints the
time per call of each forward, eager and compiled, each attention kernel, and how far
each bf16 result is from sam2's float32 result (relative max error): ours must be no
further than sam2's own bf16.

GPU (docs/performance.md)::

    python benchmarks/sam2_attention_bench.py --objects 1,10,50
"""

from __future__ import annotations

import argparse
import copy
import time


def _time(fn, reps: int) -> float:
    import torch

    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t) / reps


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sam2.1_hiera_tiny")
    p.add_argument("--objects", default="1,10,50")
    p.add_argument("--memory-frames", type=int, default=7)
    p.add_argument("--pointers", type=int, default=16)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args(argv)

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from napari_sam2_worms.backends.sam2.accel.compile import attention_kernels
    from napari_sam2_worms.backends.sam2.accel.memory_attention import install_fast_memory_attention
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    pred = build_model(args.model, dev)
    sam2_ma = pred.memory_attention.eval()
    fast_holder = copy.deepcopy(pred)
    assert install_fast_memory_attention(fast_holder)
    fast_ma = fast_holder.memory_attention
    forwards = {"sam2": sam2_ma.forward, "ours": fast_ma.forward}
    if not args.no_compile:
        for name in list(forwards):
            forwards[name + " compiled"] = torch.compile(forwards[name], dynamic=True)
    print(f"\n{args.model}, {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("\n| objects | forward | kernel | ms per call | rel. max error vs sam2 fp32 |")
    print("|---|---|---|---|---|")
    n_tok = 4096
    for n in [int(x) for x in args.objects.split(",")]:
        g = torch.Generator(device=dev).manual_seed(n)
        img = torch.randn(n_tok, 1, 256, device=dev, generator=g)
        pos = torch.randn(n_tok, 1, 256, device=dev, generator=g)
        m = args.memory_frames * n_tok + 4 * args.pointers
        mem = torch.randn(m, n, 64, device=dev, generator=g).to(torch.bfloat16)
        mpos = torch.randn(m, n, 64, device=dev, generator=g)
        call = (
            [img.expand(n_tok, n, 256)],
            mem,
            [pos.expand(n_tok, n, 256)],
            mpos,
            4 * args.pointers,
        )
        with torch.inference_mode():
            ref = sam2_ma(call[0], mem.float(), call[2], mpos, call[4]).float()
            scale = ref.abs().max().item()
            kernels = {
                "auto": None,
                "cudnn": SDPBackend.CUDNN_ATTENTION,
                "flash": SDPBackend.FLASH_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION,
            }
            for name, fwd in forwards.items():
                for kname, k in kernels.items():
                    if "compiled" in name and kname != "auto":
                        continue
                    ctx = attention_kernels(n, dev) if k is None else sdpa_kernel([k])
                    try:
                        with torch.autocast("cuda", dtype=torch.bfloat16), ctx:
                            out = fwd(*call).float()
                            err = (out - ref).abs().max().item() / scale
                            ms = _time(lambda f=fwd, c=call: f(*c), args.reps)
                    except RuntimeError as exc:
                        print(f"| {n} | {name} | {kname} | not available: {str(exc)[:60]} | |")
                        continue
                    print(f"| {n} | {name} | {kname} | {ms:.2f} | {err:.4f} |", flush=True)


if __name__ == "__main__":
    main()

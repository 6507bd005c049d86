# ruff: noqa: E501
"""Where does a SAM 2 propagation frame spend its time? (GPU profiling helper.)

Runs our batched propagation on a synthetic plate with random weights and prints, per
object count: frames/s, GPU busy time per frame vs wall time per frame (a GPU busy
far below the wall time means the Python/launch side is the bottleneck), the time of
each model component (``record_function`` ranges) and the top CUDA kernels. Also
times sam2's cross-attention shape under each ``scaled_dot_product_attention``
backend.

    export PYTHONPATH=$PWD/.devsite:$PWD/src; python3 benchmarks/sam2_profile.py --objects 1,10,50
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np


def _wrap(obj, name: str, label: str) -> None:
    import inspect

    import torch

    fn = getattr(obj, name)
    static = isinstance(inspect.getattr_static(obj, name), staticmethod)

    @functools.wraps(fn)
    def wrapped(*a, **k):
        with torch.profiler.record_function(label):
            return fn(*a, **k)

    setattr(obj, name, staticmethod(wrapped) if static else wrapped)


def attention_backends(device, n_obj: int, mem_frames: int = 7) -> None:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(n_obj, 1, 4096, 256, device=device, dtype=torch.bfloat16)
    k = torch.randn(n_obj, 1, 4096 * mem_frames + 64, 256, device=device, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    flops = 4 * q.shape[0] * q.shape[2] * k.shape[2] * 256
    for name, be in [
        ("default", None),
        ("flash", SDPBackend.FLASH_ATTENTION),
        ("efficient", SDPBackend.EFFICIENT_ATTENTION),
        ("cudnn", SDPBackend.CUDNN_ATTENTION),
    ]:
        try:
            ctx = sdpa_kernel(be) if be is not None else torch.autocast("cuda", enabled=False)
            with ctx:
                for _ in range(3):
                    F.scaled_dot_product_attention(q, k, v)
                torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(10):
                    F.scaled_dot_product_attention(q, k, v)
                torch.cuda.synchronize()
            dt = (time.perf_counter() - t) / 10
            print(
                f"  sdpa {name:9s} {n_obj:3d} obj: {dt * 1e3:7.2f} ms  {flops / dt / 1e12:6.0f} TFLOP/s"
            )
        except Exception as exc:
            print(f"  sdpa {name:9s}: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}")


def _report(prof, n: int, wall: float, args, device) -> None:
    """Print the profiled frames' ranges and kernels for ``n`` objects."""
    events = prof.key_averages()
    dev_attr = (
        "self_device_time_total"
        if hasattr(events[0], "self_device_time_total")
        else "self_cuda_time_total"
    )
    kernels = (
        [e for e in events if getattr(e, dev_attr, 0) > 0 and e.device_type.name != "CPU"]
        if device.type == "cuda"
        else []
    )
    gpu_busy = (
        sum(getattr(e, dev_attr) for e in events if e.device_type.name == "CUDA")
        / 1e3
        / args.profile_frames
    )
    n_launch = (
        sum(
            e.count
            for e in events
            if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")
        )
        / args.profile_frames
    )
    print(
        f"\n## {n} objects: {1 / wall:.1f} frames/s under the profiler; wall {wall * 1e3:.1f} ms/frame, "
        f"GPU kernels {gpu_busy:.1f} ms/frame, {n_launch:.0f} launches/frame"
    )
    print("| range | CPU ms/frame | GPU ms/frame |\n|---|---|---|")
    for e in events:
        if e.key in (
            "image_encoder",
            "memory_attention",
            "sam_heads",
            "memory_encoder",
            "memory_prepare+attention",
            "to_video_res",
            "wait+copy",
        ):
            dev = getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0))
            print(
                f"| {e.key} | {e.cpu_time_total / 1e3 / args.profile_frames:.2f} | {dev / 1e3 / args.profile_frames:.2f} |"
            )
    if kernels:
        kernels.sort(key=lambda e: -getattr(e, dev_attr))
        print("\n| kernel | calls/frame | GPU ms/frame |\n|---|---|---|")
        for e in kernels[: args.rows]:
            print(
                f"| {e.key[:90]} | {e.count / args.profile_frames:.0f} | {getattr(e, dev_attr) / 1e3 / args.profile_frames:.3f} |"
            )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sam2.1_hiera_tiny")
    p.add_argument("--objects", default="1,10,50")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--profile-frames", type=int, default=8)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--device", default="auto")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--compile", default="", help="torch.compile mode for our backend")
    p.add_argument("--no-profiler", action="store_true", help="only time frames/s")
    p.add_argument("--no-sdpa", action="store_true", help="skip the attention-kernel table")
    args = p.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from napari_sam2_worms.backends.base import ObjectPrompts
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
    from napari_sam2_worms.backends.sam2.checkpoints import build_model, resolve_device
    from napari_sam2_worms.backends.sam2.results import PendingResult
    from napari_sam2_worms.synthetic import make_plate

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    pred = build_model(args.model, device, image_size=args.image_size)
    if not args.no_profiler:
        _wrap(pred, "forward_image", "image_encoder")
        _wrap(pred.memory_attention, "forward", "memory_attention")
        _wrap(pred, "_forward_sam_heads", "sam_heads")
        _wrap(pred, "_encode_new_memory", "memory_encoder")
        _wrap(pred, "_prepare_memory_conditioned_features", "memory_prepare+attention")
        _wrap(pred, "_get_orig_video_res_output", "to_video_res")
        _wrap(PendingResult, "finish", "wait+copy")
    objects = [int(x) for x in args.objects.split(",")]
    plate = make_plate(
        n_frames=args.frames, height=args.height, width=args.width, n_worms=max(objects), seed=0
    )
    if device.type == "cuda":
        print(torch.cuda.get_device_name(), torch.__version__, "compile:", args.compile or "off")
    if device.type == "cuda" and not args.no_sdpa:
        for n in objects:
            attention_backends(device, n)
    for n in objects:
        be = Sam2Backend(predictor=pred, device=str(device), compile=args.compile or False)
        be.open(plate.video)
        for k in range(n):
            xy = np.clip(plate.centerlines[0, k, 24], 0, [args.width - 1, args.height - 1])
            be.set_prompts(0, k + 1, ObjectPrompts(points=xy[None], labels=np.array([1])))
        gen = be.propagate(0, args.frames - 1)
        warm = args.frames - args.profile_frames - 1
        t = time.perf_counter()
        for _ in range(warm):
            next(gen)
        if device.type == "cuda":
            torch.cuda.synchronize()
        print(
            f"\n{n} objects: first {warm} frames (warm-up, compilation) took {time.perf_counter() - t:.1f} s"
        )
        if args.no_profiler:
            t = time.perf_counter()
            for _ in range(args.profile_frames):
                next(gen)
            torch.cuda.synchronize() if device.type == "cuda" else None
            print(
                f"{n} objects: {args.profile_frames / (time.perf_counter() - t):.1f} frames/s",
                flush=True,
            )
            gen.close()
            be.close()
            continue
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            t = time.perf_counter()
            for _ in range(args.profile_frames):
                next(gen)
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall = (time.perf_counter() - t) / args.profile_frames
        gen.close()
        be.close()
        _report(prof, n, wall, args, device)


if __name__ == "__main__":
    main()

"""A/B of one backend switch in one process: propagation frames/s, alternated.

Machines of the same kind differ by up to 2x in frames/s (the host CPU launches the
kernels), so a switch is judged only within one process: same predictor, same plate,
variants alternated, each run twice after a warm-up (compilation, autotuning). Random
weights (speed only; masks say nothing about quality).

    export PYTHONPATH=$PWD/.devsite:$PWD/src
    python3 benchmarks/sam2_ab.py --switch fast_attention --objects 10 --compile
    python3 benchmarks/sam2_ab.py --switch cuda_graphs --objects 10 --compile --graph-max-objects 64
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SWITCHES = ("fast_attention", "cuda_graphs", "batch_objects")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--switch", choices=SWITCHES, default="fast_attention")
    p.add_argument("--objects", type=int, default=10)
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--graph-max-objects", type=int, default=None)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cuda", help="cpu: smoke run only")
    p.add_argument("--image-size", type=int, default=None, help="smoke runs only")
    p.add_argument("--size", default="640x480", help="video width x height")
    args = p.parse_args(argv)

    import torch

    from napari_sam2_worms.backends.sam2 import adapter
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
    from napari_sam2_worms.backends.sam2.checkpoints import build_model
    from napari_sam2_worms.engine.session import TrackingSession
    from napari_sam2_worms.synthetic import make_plate

    if args.graph_max_objects is not None:
        adapter.GRAPH_MAX_OBJECTS = args.graph_max_objects
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    width, height = (int(v) for v in args.size.split("x"))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    plate = make_plate(n_frames=args.frames, height=height, width=width, n_worms=args.objects)
    video = np.stack([np.dstack([f] * 3) for f in plate.video])
    predictors = {}  # a switch that changes the predictor needs one predictor per value

    def run(value: bool, label: str) -> None:
        if value not in predictors:
            torch.manual_seed(0)
            predictors[value] = build_model("sam2.1_hiera_tiny", device, image_size=args.image_size)
        backend = Sam2Backend(
            predictor=predictors[value],
            device=args.device,
            compile=args.compile,
            **{args.switch: value},
        )
        session = TrackingSession(video, backend)
        for k in range(args.objects):
            x, y = np.clip(plate.centerlines[0, k, 24], 0, [width - 1, height - 1])
            session.add_object()
            session.add_point(0, k + 1, float(x), float(y), True)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        n = sum(1 for _ in session.propagate("forward"))
        if cuda:
            torch.cuda.synchronize()
        fps = (n - 1) / (time.perf_counter() - t)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        print(
            f"| {args.objects} | {args.switch}={value} | {label} | {fps:.1f} | {peak:.2f} |",
            flush=True,
        )
        session.close()

    name = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"\n{name}, compile={args.compile}, {args.frames} frames\n")
    print("| worms | variant | run | frames/s | peak GPU GiB |\n|---|---|---|---|---|")
    for value in (True, False):
        run(value, "warm-up")
    for k in range(args.repeats):
        for value in (True, False):
            run(value, str(k + 1))


if __name__ == "__main__":
    main()

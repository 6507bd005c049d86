"""SAM 2 on the CPU: each speed-up of :mod:`napari_sam2_worms.backends.sam2.accel.cpu` off vs on.

SAM 2.1 tiny with random weights (speed does not depend on the weights; masks from
random weights say nothing about quality), a synthetic 640x480 plate, 2 worms, through
the TrackingSession as a user runs it: the first click (click to mask: the frame's
image features, the decoder, the label stack), a click on the second worm (features
cached), then propagation into the label stack (end-to-end seconds a frame).

The configurations run interleaved on one model in one process, their order rotated
each round, so a shared, loaded machine slows them alike; the table gives medians over
the rounds of wall time and of the process's CPU time (less sensitive to other users),
the load average during the run, and the mean IoU of each configuration's label stack
with the float32 one of the same round (the "same masks" check)::

    python3 benchmarks/sam2_cpu_speedups.py --sizes 512,768,1024 --frames 3 --rounds 3

Configurations: ``off`` (float32, sam2's layouts), ``bf16`` (bf16 autocast),
``channels_last``, ``default`` (what a user gets: the speed-ups on by default whose
check passes), ``on`` (``default`` + bf16 where its check passes, as with
``NAPARI_SAM2_WORMS_CPU_BF16=1``), and
``compile`` (``on`` + the image encoder compiled by inductor, timed after its warm-up).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

CONFIGS = {
    "off": dict(bf16=False, channels_last=False),
    "bf16": dict(bf16=True, channels_last=False),
    "channels_last": dict(bf16=False, channels_last=True),
    "default": dict(bf16=None, channels_last=None),
    "on": dict(bf16=None, channels_last=None),
}


BF16_ENV = "NAPARI_SAM2_WORMS_CPU_BF16"


def _cpu() -> float:
    return time.process_time()


def run_once(predictor, clip, pts, config: str) -> dict:
    """Clicks and propagation through a TrackingSession in ``config``."""
    from napari_sam2_worms.backends.sam2.accel.cpu import configure_cpu
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
    from napari_sam2_worms.engine.session import TrackingSession

    kw = CONFIGS["on" if config == "compile" else config]
    if kw["bf16"] is None:  # what the checks decide; "on" asks for bf16 as well
        predictor.__dict__.pop("_nsw_cpu_wanted", None)
        os.environ[BF16_ENV] = "1" if config in ("on", "compile") else "0"
    configure_cpu(predictor, **kw)
    backend = Sam2Backend(predictor=predictor, device="cpu", compile=config == "compile")
    session = TrackingSession(clip, backend)
    session.add_object()
    t, c = time.perf_counter(), _cpu()
    session.add_point(0, 1, float(pts[0][0]), float(pts[0][1]), True)
    click, click_cpu = time.perf_counter() - t, _cpu() - c
    for k, xy in enumerate(pts[1:], 2):
        session.add_object()
        t = time.perf_counter()
        session.add_point(0, k, float(xy[0]), float(xy[1]), True)
        cached = time.perf_counter() - t
    t, c = time.perf_counter(), _cpu()
    for _ in session.propagate("forward"):
        pass
    n = len(clip) - 1
    frame, frame_cpu = (time.perf_counter() - t) / n, (_cpu() - c) / n
    labels = session.labels.copy()
    session.close()
    return dict(
        click=click,
        click_cpu=click_cpu,
        cached=cached,
        frame=frame,
        frame_cpu=frame_cpu,
        labels=labels,
        on=dict(predictor._nsw_cpu),
    )


def label_iou(a: np.ndarray, b: np.ndarray, n_obj: int) -> float:
    ious = []
    for t in range(len(a)):
        for o in range(1, n_obj + 1):
            x, y = a[t] == o, b[t] == o
            union = (x | y).sum()
            if union:
                ious.append((x & y).sum() / union)
    return float(np.mean(ious)) if ious else float("nan")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="512,768,1024")
    p.add_argument("--frames", type=int, default=3, help="frames propagated after the click")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--configs", default="off,bf16,channels_last,on")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: as chosen)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--objects", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    from napari_sam2_worms.backends.sam2.accel.cpu import check_bf16, native_bf16
    from napari_sam2_worms.backends.sam2.checkpoints import build_model
    from napari_sam2_worms.synthetic import make_plate

    if args.threads:
        torch.set_num_threads(args.threads)
    sys_load = os.getloadavg()
    configs = [c for c in args.configs.split(",") if c]
    plate = make_plate(
        n_frames=args.frames + 1,
        height=args.height,
        width=args.width,
        n_worms=args.objects,
        seed=0,
    )
    clip = np.stack([np.dstack([f] * 3) for f in plate.video])
    h, w = clip.shape[1:3]
    pts = [np.clip(plate.centerlines[0, k, 24], 0, [w - 1, h - 1]) for k in range(args.objects)]
    print(
        f"\nsam2.1_hiera_tiny (random weights), CPU {torch.backends.cpu.get_cpu_capability()}, "
        f"native bf16 {native_bf16()} (check: {check_bf16()}), {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}, video {w}x{h}x{len(clip)}, {args.objects} "
        f"objects, {args.rounds} rounds, {time.strftime('%Y-%m-%d %H:%M')}, load average "
        f"at start {sys_load[0]:.1f}\n",
        flush=True,
    )
    print(
        "| input | config | click to mask s (CPU s) | click, features cached s | "
        "s/frame end to end (CPU s) | x off (wall / CPU) | IoU vs off | on |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size in [int(s) for s in args.sizes.split(",")]:
        torch.manual_seed(0)
        predictor = build_model("sam2.1_hiera_tiny", "cpu", image_size=size)
        if "compile" in configs:  # warm-up: compilation, not timed in the rounds
            t = time.perf_counter()
            run_once(predictor, clip[:2], pts, "compile")
            print(f"(compile warm-up at {size}: {time.perf_counter() - t:.0f} s)", flush=True)
        results: dict[str, list[dict]] = {c: [] for c in configs}
        ious: dict[str, list[float]] = {c: [] for c in configs}
        loads = []
        for r in range(args.rounds):
            order = configs[r % len(configs) :] + configs[: r % len(configs)]
            got = {}
            for config in order:
                got[config] = run_once(predictor, clip, pts, config)
                results[config].append(got[config])
                loads.append(os.getloadavg()[0])
            if "off" in got:
                for config in configs:
                    ious[config].append(
                        label_iou(got[config]["labels"], got["off"]["labels"], args.objects)
                    )
        med = {
            c: {
                k: statistics.median(x[k] for x in results[c])
                for k in results[c][0]
                if k not in ("labels", "on")
            }
            for c in configs
        }
        for c in configs:
            m = med[c]
            base = med.get("off", m)
            iou = f"{np.mean(ious[c]):.4f}" if ious[c] else "-"
            on = ", ".join(k for k, v in results[c][-1]["on"].items() if v) or "-"
            print(
                f"| {size} | {c} | {m['click']:.2f} ({m['click_cpu']:.2f}) | {m['cached']:.2f} | "
                f"{m['frame']:.2f} ({m['frame_cpu']:.2f}) | "
                f"{base['frame'] / m['frame']:.2f} / {base['frame_cpu'] / m['frame_cpu']:.2f} | "
                f"{iou} | {on} |",
                flush=True,
            )
        print(f"(load average during {size}: median {statistics.median(loads):.1f})", flush=True)


if __name__ == "__main__":
    main()

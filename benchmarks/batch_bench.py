"""Batch throughput and memory: videos/hour, workers sharing a GPU, leaks over many videos.

Makes ``--videos`` synthetic plate videos (TIFF stacks, ``--frames`` frames, ``--worms``
worms, one click per worm in ``<video>.prompts.json``), then runs the ``batch`` code
path (:func:`napari_sam2_worms.batch.run_batch`, an embedded LocalCluster) once per
worker count in ``--workers``, each into its own output folder, and prints:

- videos/hour over the whole batch (cluster start and model loads included) and over
  the span from the first video's start to the last one's end;
- per video: worker, seconds, tracking frames/s, worker host memory (RSS) and GPU
  memory after it (peak during it): a worker that processes many videos in a row
  holds steady memory when nothing leaks;
- each GPU's mean utilisation during the batch (``nvidia-smi``), when there is one;
- with ``--compare``: per-object mask IoU of every video between the runs (the same
  video must give the same masks whatever worker or GPU ran it).

To keep generation cheap, each distinct plate is made with ``--base-frames`` frames and
played forward and backward (ping-pong) up to ``--frames``: the worms move continuously.

Examples::

    # leaks, classic backend, this machine: one worker, 20 videos in a row
    python3 benchmarks/batch_bench.py --backend classic --videos 20 --frames 150 \\
        --size 240x320 --workers 1
    # GPU: 10 videos of 1,000 frames, 5 worms; 1 worker, then 2 workers on one GPU
    python3 benchmarks/batch_bench.py --backend sam2 --videos 10 --frames 1000 \\
        --workers 1,2 --gpus 0 --compare
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _make_one(args: tuple) -> None:
    import tifffile

    from napari_sam2_worms.synthetic import make_plate

    path, seed, base, frames, h, w, worms = args
    plate = make_plate(n_frames=base, height=h, width=w, n_worms=worms, seed=seed)
    cycle = np.concatenate([np.arange(base), np.arange(base - 2, 0, -1)]) if base > 1 else [0]
    idx = np.resize(cycle, frames)
    tifffile.imwrite(path, plate.video[idx])
    pts = [
        {"object": o, "frame": 0, "x": xy[0], "y": xy[1], "positive": True}
        for o, xy in plate.head_points(0).items()
    ]
    Path(path).with_suffix(".prompts.json").write_text(json.dumps({"version": 1, "points": pts}))


def make_videos(folder: Path, n: int, frames: int, base: int, h: int, w: int, worms: int):
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder / f"plate{i:03d}.tif"), i, base, frames, h, w, worms) for i in range(n)]
    todo = [j for j in jobs if not Path(j[0]).is_file()]
    if todo:
        t0 = time.perf_counter()
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(len(todo), os.cpu_count() or 1)) as pool:
            pool.map(_make_one, todo)
        print(f"made {len(todo)} videos in {time.perf_counter() - t0:.1f} s", flush=True)
    return [Path(j[0]) for j in jobs]


class GpuSampler:
    """Mean utilisation and memory of each GPU while it runs (nvidia-smi, 0.5 s)."""

    def __init__(self) -> None:
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=index,utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    "500",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3 and parts[1].replace(".", "").isdigit():
                self.samples.setdefault(parts[0], []).append((float(parts[1]), float(parts[2])))

    def stop(self) -> dict[str, dict[str, float]]:
        if self.proc is None:
            return {}
        self.proc.terminate()
        self.proc.wait()
        return {
            g: {
                "util_mean_pct": round(float(np.mean([u for u, _ in s])), 1),
                "mem_max_mib": float(max(m for _, m in s)),
                "samples": len(s),
            }
            for g, s in self.samples.items()
        }


def _iou(a: np.ndarray, b: np.ndarray) -> dict[int, float]:
    out = {}
    for o in sorted(set(np.unique(a)) | set(np.unique(b))):
        if o == 0:
            continue
        ma, mb = a == o, b == o
        union = np.logical_or(ma, mb).sum()
        out[int(o)] = float(np.logical_and(ma, mb).sum() / union) if union else 1.0
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="classic", choices=["classic", "sam2"])
    p.add_argument("--model", default="sam2.1_hiera_tiny")
    p.add_argument("--checkpoint", help="real weights (default: random, made here)")
    p.add_argument("--videos", type=int, default=10)
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--base-frames", type=int, default=100, help="distinct frames per plate")
    p.add_argument("--worms", type=int, default=5)
    p.add_argument("--size", default="480x640", help="HEIGHTxWIDTH")
    p.add_argument("--workers", default="1", help="worker counts to run, e.g. 1,2")
    p.add_argument("--gpus", default="all")
    p.add_argument("--skeleton-workers", type=int, default=None)
    p.add_argument("--data", help="folder for the videos and outputs (default: a temp dir)")
    p.add_argument("--compare", action="store_true", help="mask IoU between the runs")
    p.add_argument("--json", help="write the figures here")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the output folder: videos already done are skipped (a run cut short goes on)",
    )
    args = p.parse_args()

    from napari_sam2_worms.batch.runner import BatchOptions, run_batch

    h, w = (int(v) for v in args.size.lower().split("x"))
    root = Path(args.data or tempfile.mkdtemp(prefix="batch-bench-"))
    videos = make_videos(
        root / "videos", args.videos, args.frames, args.base_frames, h, w, args.worms
    )
    checkpoint = args.checkpoint
    if args.backend == "sam2" and checkpoint is None:
        from napari_sam2_worms.testing.random_sam2 import make_random_checkpoint

        checkpoint = str(make_random_checkpoint(root / "random.pt", args.model, reuse=True).path)
    options = BatchOptions(
        backend=args.backend,
        model=args.model,
        checkpoint=checkpoint,
        download=False,
        skeleton_workers=args.skeleton_workers,
    )
    report: dict = {"args": vars(args), "runs": {}}
    outs = {}
    for n in [int(x) for x in args.workers.split(",")]:
        out = root / f"out-w{n}"
        if not args.resume:
            shutil.rmtree(out, ignore_errors=True)
        sampler = GpuSampler()
        t0 = time.time()
        summary = run_batch(
            [str(v) for v in videos],
            out,
            options,
            workers=n,
            gpus=args.gpus,
            dashboard_address=None,
            progress=False,
            echo=lambda m: print(m, flush=True),
        )
        wall = time.time() - t0
        gpu = sampler.stop()
        doc = json.loads((out / "manifest.json").read_text())["videos"]
        entries = sorted(doc.values(), key=lambda e: e.get("finished", 0))
        span = max(e["finished"] for e in entries) - min(e["started"] for e in entries)
        run = {
            "workers": n,
            "done": len(summary.done),
            "failed": summary.failed,
            "wall_s": round(wall, 1),
            "span_s": round(span, 1),
            "videos_per_hour": round(len(summary.done) / wall * 3600, 1),
            "videos_per_hour_span": round(len(summary.done) / span * 3600, 1),
            "gpu": gpu,
            "per_video": [
                {
                    "name": e["name"],
                    "worker": (e.get("worker") or {}).get("name"),
                    "gpu_id": (e.get("worker") or {}).get("cuda_visible_devices"),
                    "seconds": e.get("seconds"),
                    "frames_per_s": (e.get("metrics") or {}).get("frames_per_s"),
                    "timings": e.get("timings"),
                    "rss_mb": (e.get("worker") or {}).get("rss_mb"),
                    "gpu_allocated_mb": (e.get("worker") or {}).get("gpu_allocated_mb"),
                    "gpu_peak_mb": (e.get("worker") or {}).get("gpu_peak_mb"),
                    "error": e.get("error"),
                }
                for e in entries
            ],
        }
        report["runs"][n] = run
        outs[n] = out
        if args.json:  # after each run, in case a later one is cut short
            Path(args.json).write_text(json.dumps(report, indent=1, default=str))
        print(
            f"\nworkers={n}: {run['done']} done, {len(run['failed'])} failed in {run['wall_s']} s"
            f" -> {run['videos_per_hour']} videos/hour ({run['videos_per_hour_span']} over the"
            f" tasks' span of {run['span_s']} s); GPUs: {gpu}"
        )
        cols = ("track s", "write s", "fps", "rss MB", "gpu MB", "peak MB")
        print(
            f"{'video':10s} {'worker':>6s} {'gpu':>4s} {'s':>7s} "
            + " ".join(f"{c:>8s}" for c in cols)
        )
        for v in run["per_video"]:
            print(
                f"{v['name']:10s} {v['worker']!s:>6s} {v['gpu_id']!s:>4s} {v['seconds']!s:>7s} "
                f"{(v['timings'] or {}).get('track')!s:>8s} "
                f"{(v['timings'] or {}).get('write')!s:>8s} "
                f"{v['frames_per_s']!s:>7s} {v['rss_mb']!s:>8s} {v['gpu_allocated_mb']!s:>8s} "
                f"{v['gpu_peak_mb']!s:>8s}",
                flush=True,
            )
    if args.compare and len(outs) > 1:
        import tifffile

        ref_n, *others = list(outs)
        worst = 1.0
        for n in others:
            for v in videos:
                a = tifffile.imread(outs[ref_n] / v.stem / "masks.tif")
                b = tifffile.imread(outs[n] / v.stem / "masks.tif")
                ious = _iou(a, b)
                worst = min(worst, min(ious.values(), default=1.0))
        report["min_iou_between_runs"] = worst
        print(f"\nmask IoU between runs, worst object of any video: {worst:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Skeletons made while tracking vs after: end-to-end time with a GPU-like backend.

The backend is the test oracle (ground-truth masks) slowed to ``--fps`` by sleeping
between frames, as a process waiting on a GPU does (the main thread is idle, other
cores are free), or with ``--busy`` by busy Python work, as a thread launching GPU
kernels does (then any work the stream puts on that thread, or any thread competing
for the interpreter lock, slows tracking). Prints the end-to-end time (propagation +
skeletons) for skeletons computed after propagation (in this process, or in worker
processes) and for skeletons
streamed to worker processes while tracking, and checks that all give the same tracks.

    python3 benchmarks/skeleton_stream_bench.py --worms 10 --frames 300 --fps 40
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worms", type=int, default=10)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--fps", type=float, default=40.0, help="simulated tracking speed")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--busy",
        action="store_true",
        help="pace by busy Python work, as a thread launching GPU kernels (default: sleep)",
    )
    args = p.parse_args(argv)

    from napari_sam2_worms.engine.session import TrackingSession
    from napari_sam2_worms.synthetic import make_plate
    from napari_sam2_worms.testing.oracle import OracleBackend
    from napari_sam2_worms.video import ArrayVideo

    class PacedOracle(OracleBackend):
        def propagate(self, start, stop, reverse=False):
            for r in super().propagate(start, stop, reverse):
                if args.busy:  # holds the interpreter lock, as kernel launches do
                    end = time.perf_counter() + 1.0 / args.fps
                    while time.perf_counter() < end:
                        sum(range(200))
                else:
                    time.sleep(1.0 / args.fps)
                yield r

    plate = make_plate(n_frames=args.frames, height=480, width=640, n_worms=args.worms, seed=0)
    truth = np.asarray(plate.labels)
    ids = [int(i) for i in np.unique(truth[0]) if i]

    def run(mode: str):
        session = TrackingSession(ArrayVideo(np.asarray(plate.video), fps=15.0), PacedOracle(truth))
        session.skeleton_workers = args.workers if mode == "streamed" else 0
        for oid in ids:
            session.add_object(object_id=oid)
            r, c = np.argwhere(truth[0] == oid)[0]
            session.add_point(0, oid, float(c), float(r), True)
        t = time.perf_counter()
        for _ in session.propagate("forward"):
            pass
        t_prop = time.perf_counter() - t
        tracks = session.skeletons(workers=args.workers if mode == "after, workers" else 0)
        total = time.perf_counter() - t
        session.close()
        return t_prop, total, tracks

    print(
        f"\n{len(ids)} worms x {args.frames} frames 640x480, tracking paced at {args.fps:g} "
        f"frames/s, {args.workers} worker process(es)\n"
    )
    print("| skeletons | propagation s | end to end s | end-to-end frames/s |")
    print("|---|---|---|---|")
    ref = None
    for mode in ("after, this process", "after, workers", "streamed"):
        t_prop, total, tracks = run(mode)
        if ref is None:
            ref = tracks
        same = np.array_equal(ref.points, tracks.points, equal_nan=True) and np.array_equal(
            ref.reason, tracks.reason
        )
        assert same, f"{mode}: tracks differ"
        print(f"| {mode} | {t_prop:.2f} | {total:.2f} | {args.frames / total:.1f} |", flush=True)


if __name__ == "__main__":
    main()

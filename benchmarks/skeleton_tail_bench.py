"""The skeleton tail after tracking: what ``skeletons()`` still costs once the stream
has skeletonized every frame while tracking (CPU only).

Feeds a synthetic plate's ground-truth label frames to a warm worker pool at
``--fps`` (as tracking would), then times waiting for the stream (``cache()``) and
``skeletonize_labels`` with that cache: checking each frame against what the workers
saw, orienting, features.

    python3 benchmarks/skeleton_tail_bench.py --worms 10 --fps 60 --workers 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worms", type=int, default=10)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--fps", type=float, default=60.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    from napari_sam2_worms.skeleton import skeletonize_labels
    from napari_sam2_worms.skeleton.stream import SkeletonPool
    from napari_sam2_worms.synthetic import make_plate

    plate = make_plate(n_frames=args.frames, height=480, width=640, n_worms=args.worms)
    labels = plate.labels.astype(np.uint8)  # the session's label type below 256 objects
    ids = list(range(1, args.worms + 1))
    pool = SkeletonPool(args.workers)
    pool.wait_ready(60)
    try:
        for run in range(args.repeats):
            stream = pool.stream(ids)
            t0 = time.perf_counter()
            for t in range(args.frames):
                stream.feed(t, labels[t])
                pause = t0 + (t + 1) / args.fps - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            t1 = time.perf_counter()
            cache = stream.cache()
            t2 = time.perf_counter()
            skeletonize_labels(labels, ids, workers=args.workers, cache=cache)
            t3 = time.perf_counter()
            print(
                f"run {run + 1}: {args.worms} worms, {args.frames} frames fed at {args.fps} "
                f"frames/s to {args.workers} workers: wait for the stream {t2 - t1:.3f} s, "
                f"skeletonize_labels {t3 - t2:.3f} s",
                flush=True,
            )
            stream.close()
    finally:
        pool.close()


if __name__ == "__main__":
    main()

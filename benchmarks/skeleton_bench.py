"""Skeletonizer speed and accuracy on the synthetic plate (one core).

Times :func:`skeletonize_labels` (centerlines, flags, orientation, features) on
``make_plate`` and reports worm masks per second, the median centerline error where
worms are apart, the head-first rate there, and the error on coiled frames.

Run: ``OMP_NUM_THREADS=1 python3 benchmarks/skeleton_bench.py [--frames 120]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def centerline_errors(points: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, K) mean point error as given and reversed."""
    e = np.hypot(*(points - truth).transpose(3, 0, 1, 2)).mean(-1)
    er = np.hypot(*(points[:, :, ::-1] - truth).transpose(3, 0, 1, 2)).mean(-1)
    return e, er


def main() -> None:
    from napari_sam2_worms.skeleton import skeletonize_labels
    from napari_sam2_worms.synthetic import make_plate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    plate = make_plate(n_frames=args.frames)
    n_masks = int(sum(len(np.unique(f)) - 1 for f in plate.labels))
    best = np.inf
    for _ in range(args.repeat):
        t0 = time.process_time()
        tracks = skeletonize_labels(plate.labels, fps=plate.fps)
        best = min(best, time.process_time() - t0)
    e, er = centerline_errors(tracks.points, plate.centerlines)
    apart = ~plate.touching & ~plate.coiled
    ok = np.isfinite(e)
    print(f"plate {plate.labels.shape}, {n_masks} worm masks")
    print(f"speed: {n_masks / best:.0f} masks/s (CPU time {best:.3f} s, best of {args.repeat})")
    print(
        f"apart: median error {np.nanmedian(np.minimum(e, er)[apart]):.2f} px, "
        f"head first {100 * np.mean((e <= er)[apart & ok]):.1f}%, "
        f"centerline on {100 * ok[apart].mean():.1f}%"
    )
    coil = plate.coiled & ~plate.touching
    if coil.any():
        print(
            f"coiled ({coil.sum()} frames): median error "
            f"{np.nanmedian(np.minimum(e, er)[coil]):.2f} px, flagged "
            f"{100 * np.mean(~tracks.good[coil]):.0f}%"
        )
    touch = plate.touching
    if touch.any():
        flagged = 100 * np.mean(tracks.reason[touch] == "touching")
        print(f"touching ({touch.sum()}): flagged {flagged:.0f}%")


if __name__ == "__main__":
    main()

"""Speed of the classic backend: frames per second of propagation on one core.

Usage::

    python3 benchmarks/classic_bench.py [--width 640] [--height 480] [--worms 10] [--frames 100]

Generates a synthetic plate (make_plate), clicks each worm once on frame 0, and times
``propagate`` over all frames (the background model is built before timing starts).
Run with ``OMP_NUM_THREADS=1`` for a one-core figure (numpy/scipy here are single-threaded
anyway).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_sam2_worms.backends.base import BadPromptError, ObjectPrompts
from napari_sam2_worms.backends.classic import ClassicBackend
from napari_sam2_worms.synthetic import make_plate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--worms", type=int, default=10)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    plate = make_plate(n_frames=a.frames, height=a.height, width=a.width, n_worms=a.worms)
    # prompt on the frame where most worms are inside the frame and apart
    best_frame, best_n = 0, -1
    for f in range(0, a.frames, max(1, a.frames // 10)):
        n = _prompt(ClassicBackend(), plate, f)[1]
        if n > best_n:
            best_frame, best_n = f, n
    best, tracked = 0.0, 0.0
    for _ in range(a.repeat):
        backend, n_obj = _prompt(ClassicBackend(), plate, best_frame)
        t0 = time.perf_counter()
        results = list(backend.propagate(best_frame, a.frames - 1))
        if best_frame > 0:
            results += list(backend.propagate(best_frame - 1, 0, reverse=True))
        fps = len(results) / (time.perf_counter() - t0)
        if fps > best:
            best = fps
            tracked = float(np.mean([np.isfinite(list(r.scores.values())).sum() for r in results]))
    print(
        f"classic backend: {a.width}x{a.height}, {a.worms} worms ({n_obj} prompted on frame "
        f"{best_frame}, {tracked:.1f} tracked per frame on average), {a.frames} frames: "
        f"{best:.0f} frames/s (best of {a.repeat})"
    )


def _prompt(backend: ClassicBackend, plate, frame: int) -> tuple[ClassicBackend, int]:
    backend.open(plate.video)
    backend.background_model()
    n_obj = 0
    for obj, (x, y) in plate.head_points(frame).items():
        try:  # worms may be off-frame or touching another on that frame
            backend.set_prompts(
                frame, obj, ObjectPrompts(np.array([[x, y]], np.float32), np.ones(1))
            )
            n_obj += 1
        except BadPromptError:
            continue
    return backend, n_obj


if __name__ == "__main__":
    main()

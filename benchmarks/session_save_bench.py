"""Cost of one session save (the autosave `track` makes every --autosave seconds) and of
opening it again: 900 frames of 640x480 with 5 worms, as in docs/cli.md's figure.

    python3 benchmarks/session_save_bench.py [--frames 900]

Prints the seconds of: the set written before the run-folder rules (four atomic files,
no records) for comparison, the atomic set with records (stage, fsync, hash, commit),
and load_session (records checked, arrays read).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=900)
    args = ap.parse_args()
    import tifffile

    from napari_sam2_worms.engine.session import TrackingSession
    from napari_sam2_worms.engine.session_io import load_session, save_session
    from napari_sam2_worms.synthetic import make_plate
    from napari_sam2_worms.testing.oracle import OracleBackend
    from napari_sam2_worms.utils import atomic_path
    from napari_sam2_worms.video import open_video

    plate = make_plate(n_frames=args.frames, height=480, width=640, n_worms=5, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        vpath = Path(tmp) / "plate.tif"
        tifffile.imwrite(vpath, plate.video)
        s = TrackingSession(open_video(vpath), OracleBackend(plate.labels))
        for o in range(1, 6):
            s.add_object()
            s.scores[o][:] = 1.0
        s.labels[:] = plate.labels
        save_session(s, Path(tmp) / "warm")  # the video fingerprint is made once, here
        t0 = time.perf_counter()
        with contextlib.ExitStack() as stack:  # what a save did before (no set, no records)
            tmpf = stack.enter_context(atomic_path(Path(tmp) / "old" / "masks.tif"))
            tifffile.imwrite(tmpf, s.labels, compression="zlib", compressionargs={"level": 1})
            tmpf = stack.enter_context(atomic_path(Path(tmp) / "old" / "scores.npy"))
            np.save(tmpf, s.score_table()[1])
        t_old = time.perf_counter() - t0
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            save_session(s, Path(tmp) / "run")
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        load_session(Path(tmp) / "run", OracleBackend(plate.labels))
        t_load = time.perf_counter() - t0
        size = (Path(tmp) / "run" / "masks.tif").stat().st_size
    print(f"{args.frames} frames 640x480, masks.tif {size / 1e6:.1f} MB")
    print(f"before (masks + scores, atomic each): {t_old:.2f} s")
    print(f"atomic set with records (median of 3): {sorted(times)[1]:.2f} s")
    print(f"load_session (records checked): {t_load:.2f} s")


if __name__ == "__main__":
    main()

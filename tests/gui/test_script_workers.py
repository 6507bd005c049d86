"""A plain script (no ``if __name__ == "__main__":``) that tracks a 500+ frame video with
the widget's worker start: the skeleton processes start without re-running the script."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.gui

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    print("SCRIPT START", flush=True)
    from napari_sam2_worms.backends.classic import ClassicBackend
    from napari_sam2_worms.engine.session import TrackingSession
    from napari_sam2_worms.napari._workers import start_skeleton_workers
    from napari_sam2_worms.synthetic import make_plate
    from napari_sam2_worms.video import ArrayVideo

    plate = make_plate(n_frames=520, height=48, width=64, n_worms=1, seed=3)
    s = TrackingSession(ArrayVideo(plate.video, fps=plate.fps), ClassicBackend())
    start_skeleton_workers(s)
    assert s.skeleton_workers >= 1, s.skeleton_workers
    assert s.skeleton_feed.pool.wait_ready(60.0), "workers did not start"
    (x, y), = plate.head_points(0).values()
    s.add_object()
    s.add_point(0, 1, x, y)
    for _ in s.propagate("forward"):
        pass
    tracks = s.skeletons()
    print("FRAMES WITH CENTERLINE", int(np.isfinite(tracks.points[:, 0, 0, 0]).sum()))
    s.close()
    print("SCRIPT END", flush=True)
    """
)


def test_unguarded_script_starts_skeleton_workers(tmp_path):
    script = tmp_path / "track_plate.py"
    script.write_text(SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "bootstrapping" not in text
    assert out.stdout.count("SCRIPT START") == 1  # the workers did not re-run the script
    assert "SCRIPT END" in out.stdout
    n = int(out.stdout.split("FRAMES WITH CENTERLINE")[1].split()[0])
    assert n > 100

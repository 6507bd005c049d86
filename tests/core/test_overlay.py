"""The overlay video: frame count, size, and the object colour at a known mask pixel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_sam2_worms.cli import main
from napari_sam2_worms.export.overlay import write_overlay
from napari_sam2_worms.palette import hex_to_rgb, object_color
from napari_sam2_worms.video import ArrayVideo, open_video


def _deep_pixel(mask):
    from scipy import ndimage

    d = ndimage.distance_transform_edt(mask)
    r, c = np.unravel_index(np.argmax(d), d.shape)
    return r, c


def test_overlay_frames_size_and_colour(tmp_path, small_plate):
    video = ArrayVideo(small_plate.video, fps=15.0)
    colors = {o: object_color(o) for o in (1, 2, 3)}
    out = write_overlay(
        video, small_plate.labels, tmp_path / "ov.mp4", colors, start=2, stop=9, stride=2, alpha=1.0
    )
    back = open_video(out)
    assert len(back) == 4  # frames 2, 4, 6, 8
    assert back.shape[1:3] == small_plate.labels.shape[1:]
    assert back.fps == pytest.approx(7.5, rel=0.01)
    frame = np.asarray(back[0])
    assert frame.ndim == 3
    r, c = _deep_pixel(small_plate.labels[2] == 1)
    expected = np.array(hex_to_rgb(object_color(1)))
    assert np.abs(frame[r, c].astype(int) - expected).max() < 40
    bg = np.asarray(small_plate.video[2])[5, 5]
    assert np.abs(frame[5, 5].astype(int) - int(bg)).max() < 25


def test_overlay_scale_and_cancel(tmp_path, small_plate):
    video = ArrayVideo(small_plate.video, fps=15.0)
    out = write_overlay(video, small_plate.labels, tmp_path / "half.mp4", {1: "#ff0000"}, scale=0.5)
    assert open_video(out).shape[1:3] == (60, 80)
    with pytest.raises(KeyboardInterrupt):
        write_overlay(
            video, small_plate.labels, tmp_path / "c.mp4", {1: "#ff0000"}, cancel=lambda: True
        )
    assert not (tmp_path / "c.mp4").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["half.mp4"]


def test_overlay_from_run_cli(tmp_path, small_plate):
    vpath = tmp_path / "plate.tif"
    tifffile.imwrite(vpath, small_plate.video)
    pts = [
        {"object": o, "frame": 1, "x": x, "y": y}
        for o, (x, y) in small_plate.head_points(1).items()
    ]
    (tmp_path / "p.json").write_text(json.dumps({"version": 1, "points": pts}))
    run = tmp_path / "run"
    assert (
        main(
            [
                "track",
                str(vpath),
                "--prompts",
                str(tmp_path / "p.json"),
                "--out",
                str(run),
                "--backend",
                "classic",
            ]
        )
        == 0
    )
    out = tmp_path / "overlay.mp4"
    assert (
        main(["export", str(run), "--format", "overlay-mp4", "--out", str(out), "--frames", "0:5"])
        == 0
    )
    assert len(open_video(out)) == 6

    # the video replaced by another: said at once (exit 2), before the masks are read
    # and skeletonized (minutes on a long video)
    import napari_sam2_worms.export.run_dir as run_dir

    tifffile.imwrite(vpath, small_plate.video[:3])
    (run / "skeletons.csv").unlink()
    reached = []
    real = run_dir.read_run_masks
    run_dir.read_run_masks = lambda *a, **k: reached.append(1) or real(*a, **k)
    try:
        code = main(
            ["export", str(run), "--format", "overlay-mp4", "--out", str(tmp_path / "x.mp4")]
        )
    finally:
        run_dir.read_run_masks = real
    assert code == 2
    assert not reached
    assert not (tmp_path / "x.mp4").exists()


def test_overlay_reads_the_run_through_run_dir_only():
    """export/overlay.py imports neither the session module nor session_io (palette instead)."""
    import ast
    import inspect

    import napari_sam2_worms.export.overlay as overlay

    tree = ast.parse(inspect.getsource(overlay))
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert "palette" in {m.rsplit(".", 1)[-1] for m in imported}
    assert not {m for m in imported if "session" in m or m.split(".")[0] == "engine"}


def test_palette_colours():
    assert object_color(1) == "#1f77b4" and object_color(21) == object_color(1)
    assert hex_to_rgb("#ff7f0e") == (255, 127, 14)
    with pytest.raises(ValueError, match="rrggbb"):
        hex_to_rgb("#fff")

"""Label TIFF, mask PNGs and loading a run folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_sam2_worms.export.masks import read_label_tiff, write_label_tiff, write_mask_pngs
from napari_sam2_worms.export.run_dir import RunDirError, load_run_tracks
from napari_sam2_worms.utils import OutputError


def test_label_tiff_round_trip_is_compressed_imagej(small_plate, tmp_path):
    import tifffile

    labels = small_plate.labels
    path = write_label_tiff(labels, tmp_path / "masks.tif", fps=15.0)
    back = read_label_tiff(path)
    assert back.dtype == labels.dtype
    np.testing.assert_array_equal(back, labels)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["finterval"] == pytest.approx(1 / 15)
        assert tif.pages[0].compression != tifffile.COMPRESSION.NONE
    assert path.stat().st_size < labels.nbytes / 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks.tif"]


def test_label_tiff_single_frame_and_wide_ids(tmp_path):
    frame = np.zeros((8, 9), np.uint32)
    frame[2:4, 3:5] = 70000
    path = write_label_tiff(frame, tmp_path / "one.tif")
    back = read_label_tiff(path)
    assert back.shape == (1, 8, 9) and back.max() == 70000
    with pytest.raises(ValueError, match="integers"):
        write_label_tiff(np.zeros((2, 3, 3), np.float32), tmp_path / "f.tif")


def test_mask_pngs(small_plate, tmp_path):
    from PIL import Image

    labels = small_plate.labels[:4]
    out = tmp_path / "masks"
    (out / "stale").mkdir(parents=True)  # an older export is replaced as a whole
    write_mask_pngs(labels, out, object_ids=[1, 3], names=["alpha", "gamma"])
    assert sorted(p.name for p in out.iterdir()) == ["alpha", "gamma"]
    files = sorted(p.name for p in (out / "gamma").iterdir())
    assert files == ["00000.png", "00001.png", "00002.png", "00003.png"]
    img = np.asarray(Image.open(out / "gamma" / "00002.png"))
    assert img.dtype == np.uint8 and set(np.unique(img)) <= {0, 255}
    np.testing.assert_array_equal(img == 255, labels[2] == 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks"]  # no temp folder left


def test_mask_pngs_interrupted_keeps_previous(small_plate, tmp_path, monkeypatch):
    from PIL import Image

    out = tmp_path / "masks"
    write_mask_pngs(small_plate.labels[:2], out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    calls = {"n": 0}
    real_save = Image.Image.save

    def failing_save(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        write_mask_pngs(small_plate.labels[:5], out)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks"]


def test_mask_pngs_under_a_file_is_output_error(small_plate, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not writable"):
        write_mask_pngs(small_plate.labels[:1], blocker / "masks")


# ---------------------------------------------------------------------- run folders


def _session(run, **extra):
    run.mkdir(exist_ok=True)
    doc = {"fps": 20.0, "pixel_size": 3.5, "objects": [{"id": 1, "name": "a"}, {"id": 2}]}
    doc.update(extra)
    (run / "session.json").write_text(json.dumps(doc))


def test_run_dir_errors_name_what_is_missing(tmp_path):
    with pytest.raises(RunDirError, match="is not a folder"):
        load_run_tracks(tmp_path / "nope")
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(RunDirError, match=r"session\.json"):
        load_run_tracks(run)
    (run / "session.json").write_text("{broken")
    with pytest.raises(RunDirError, match="JSON"):
        load_run_tracks(run)
    _session(run)
    with pytest.raises(RunDirError, match=r"skeletons\.csv nor masks\.tif"):
        load_run_tracks(run)
    _session(run, fps=-1)
    with pytest.raises(RunDirError, match="fps"):
        load_run_tracks(run)


def test_run_dir_skeletonizes_masks(small_plate, tmp_path, monkeypatch):
    import napari_sam2_worms.skeleton as skeleton

    seen = {}

    def fake_skeletonize(
        labels, object_ids=None, n_points=49, fps=1.0, pixel_size=None, names=None
    ):
        from napari_sam2_worms.tracks import SkeletonTracks

        seen["labels"] = labels
        return SkeletonTracks.empty(
            len(labels), object_ids, n_points, names=names, fps=fps, pixel_size=pixel_size
        )

    # the real skeletonizer is tested with the skeleton package; here: what we pass it
    monkeypatch.setattr(skeleton, "skeletonize_labels", fake_skeletonize, raising=False)
    run = tmp_path / "run"
    _session(run)
    write_label_tiff(small_plate.labels[:3], run / "masks.tif")
    tracks = load_run_tracks(run)
    np.testing.assert_array_equal(seen["labels"], small_plate.labels[:3])
    assert tracks.names == ["a", "worm2"] and list(tracks.object_ids) == [1, 2]
    assert tracks.fps == 20.0 and tracks.pixel_size == 3.5


def test_run_dir_reads_skeletons_csv_and_session_wins(tmp_path):
    from napari_sam2_worms import skeleton
    from napari_sam2_worms.tracks import SkeletonTracks

    tr = SkeletonTracks.empty(4, [1, 2], 49, fps=5.0)
    tr.points[:] = np.random.default_rng(1).random(tr.points.shape) * 100
    tr.good[:] = True
    tr.reason[:] = ""
    run = tmp_path / "run"
    _session(run)
    skeleton.write_csv(tr, run / "skeletons.csv")
    back = load_run_tracks(run)
    np.testing.assert_allclose(back.points, tr.points, atol=1e-3)
    assert back.names == ["a", "worm2"]
    assert back.fps == 20.0 and back.pixel_size == 3.5


def test_png_export_removes_what_a_killed_export_left(tmp_path):
    """A mask-PNG export killed while writing leaves a hidden temporary folder; the next
    export into the same place removes it (its process is gone), a live one's is kept."""
    import os
    import subprocess
    import sys

    from napari_sam2_worms.export.masks import write_mask_pngs
    from napari_sam2_worms.utils import temp_prefix

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)
    stale = tmp_path / temp_prefix("pngs").replace(f"-{os.getpid()}-", f"-{pid}-")
    (stale / "worm1").mkdir(parents=True)
    live = tmp_path / (temp_prefix("pngs") + "x")
    live.mkdir()
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[:, 2:5, 2:5] = 1
    out = write_mask_pngs(labels, tmp_path / "pngs")
    assert sorted(p.name for p in (out / "worm1").iterdir()) == ["00000.png", "00001.png"]
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["pngs", live.name])

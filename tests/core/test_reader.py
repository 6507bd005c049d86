"""napari reader contribution: which paths it accepts and the layer data it returns."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_sam2_worms.napari._reader import get_reader


def test_reader_module_imports_no_napari_or_qt():
    import subprocess

    code = (
        "import sys, napari_sam2_worms.napari._reader as r; "
        "roots = ('napari', 'PyQt6', 'qtpy', 'av', 'torch'); "
        "bad = [m for m in sys.modules if m.split('.')[0] in roots]; "
        "print(bad); sys.exit(bool(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_reader_opens_real_video(shared_data):
    path = shared_data / "videos" / "tierpsy_single_worm.avi"
    reader = get_reader(str(path))
    assert callable(reader)
    [(video, meta, kind)] = reader(str(path))
    assert kind == "image"
    assert meta == {
        "name": "tierpsy_single_worm",
        "metadata": {"fps": 15.0, "path": str(path)},
        "rgb": False,
    }
    assert video.shape == (563, 96, 128)
    video.close()


def test_reader_folder_and_tiff(tmp_path):
    import tifffile
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(np.full((8, 9, 3), (40 * k, 0, 200), np.uint8)).save(folder / f"f{k}.png")
    [(video, meta, _)] = get_reader(str(folder))(str(folder))
    assert video.shape == (3, 8, 9, 3) and meta["rgb"] is True and meta["name"] == "frames"
    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, np.zeros((4, 5, 6), np.uint8), photometric="minisblack")
    [(video, meta, _)] = get_reader([str(tif)])([str(tif)])
    assert video.shape == (4, 5, 6) and meta["rgb"] is False and meta["name"] == "stack"


@pytest.mark.parametrize(
    "make", ["txt", "missing", "empty_dir", "dir_of_text", "npy", "none", "int"]
)
def test_reader_declines_unsupported(tmp_path, make):
    if make == "txt":
        path = tmp_path / "notes.txt"
        path.write_text("hello")
    elif make == "missing":
        path = tmp_path / "missing.mp4"
    elif make == "empty_dir":
        path = tmp_path
    elif make == "dir_of_text":
        (tmp_path / "a.txt").write_text("x")
        path = tmp_path
    elif make == "npy":
        path = tmp_path / "a.npy"
        np.save(path, np.zeros(3))
    else:
        path = None if make == "none" else 3
    assert get_reader(path if path is None or isinstance(path, int) else str(path)) is None


def test_napari_image_layer_accepts_lazy_video(shared_data):
    layers = pytest.importorskip("napari.layers")
    path = shared_data / "videos" / "fly_pair_384.mp4"
    [(video, meta, _)] = get_reader(str(path))(str(path))
    layer = layers.Image(video, **meta)
    assert layer.data is video
    assert layer.data.shape[0] == 1100
    assert layer.rgb is False and layer.ndim == 3
    assert layer.contrast_limits[1] > layer.contrast_limits[0]
    video.close()

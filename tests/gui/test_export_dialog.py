"""The export dialog through the real menu: a run folder made by ``track`` is opened
(File > IO Utilities > SAM 2 worm tracker > Open tracking session...), then exported
as NWB with the subject typed into the dialog (checked by nwbinspector) and as PNG
masks of one object over a frame range."""

from __future__ import annotations

import pytest
import tifffile
from _real import TIMEOUT, dock_tracker, menu_action, run_menu_with_dialog
from qtpy.QtWidgets import QFileDialog

from fixtures.plates import write_prompts
from napari_sam2_worms.cli import main

pytestmark = pytest.mark.gui

IO = ("File", "IO Utilities", "SAM 2 worm tracker")


@pytest.fixture
def viewer(make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_SAM2_WORMS_CACHE", str(tmp_path / "cache"))  # no checkpoint
    return make_napari_viewer(show=True)


@pytest.fixture
def run(tmp_path, small_plate):
    video = tmp_path / "plate.tif"
    tifffile.imwrite(video, small_plate.video)
    names = {"1": "ann", "2": "bob", "3": "cy"}
    write_prompts(tmp_path / "p.json", small_plate, 1, names=names)
    out = tmp_path / "run"
    args = ["track", str(video), "--prompts", str(tmp_path / "p.json"), "--out", str(out)]
    assert main([*args, "--backend", "classic", "--workers", "0", "--fps", "12"]) == 0
    return out


def _open(viewer, qtbot, monkeypatch, run):
    widget = dock_tracker(viewer, qtbot)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(run))
    menu_action(viewer, *IO, "Open tracking session...").trigger()
    qtbot.waitUntil(lambda: widget.session is not None, timeout=TIMEOUT)
    return widget


def _export(viewer, qtbot, fill):
    run_menu_with_dialog(qtbot, menu_action(viewer, *IO, "Export skeleton tracks..."), fill)


def test_nwb_subject_from_the_dialog(viewer, qtbot, monkeypatch, run, tmp_path):
    import pynwb
    from nwbinspector import Importance, inspect_nwbfile

    _open(viewer, qtbot, monkeypatch, run)
    out = tmp_path / "plate.nwb"

    def fill(dialog):
        dialog.fmt.setCurrentIndex(dialog.fmt.findData("nwb"))
        dialog.path.setText(str(out))
        dialog.species.setText("C. elegans")
        dialog.age.setText("P3D/P4D")
        dialog.sex.setCurrentIndex(dialog.sex.findData("XX"))
        dialog.accept()

    _export(viewer, qtbot, fill)
    qtbot.waitUntil(out.is_file, timeout=TIMEOUT)
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        subject = io.read().subject
        assert (subject.species, subject.age, subject.sex) == (
            "Caenorhabditis elegans",
            "P3D/P4D",
            "XX",
        )
    bad = {Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION}
    assert [m for m in inspect_nwbfile(nwbfile_path=str(out)) if m.importance in bad] == []


def test_nwb_dialog_c_elegans_without_sex_is_refused(viewer, qtbot, monkeypatch, run, tmp_path):
    widget = _open(viewer, qtbot, monkeypatch, run)
    errors = []
    monkeypatch.setattr(widget, "notify_error", lambda exc: errors.append(str(exc)))
    out = tmp_path / "plate.nwb"

    def fill(dialog):
        dialog.fmt.setCurrentIndex(dialog.fmt.findData("nwb"))
        dialog.path.setText(str(out))
        dialog.species.setText("Caenorhabditis elegans")
        dialog.accept()

    _export(viewer, qtbot, fill)
    qtbot.waitUntil(lambda: bool(errors), timeout=TIMEOUT)
    assert "XX (hermaphrodite) or XO (male)" in errors[0]
    assert not out.exists()


def test_mask_pngs_of_one_object_and_a_frame_range(viewer, qtbot, monkeypatch, run, tmp_path):
    _open(viewer, qtbot, monkeypatch, run)
    out = tmp_path / "pngs"

    def fill(dialog):
        dialog.fmt.setCurrentIndex(dialog.fmt.findData("masks-png"))
        dialog.path.setText(str(out))
        dialog.objects.setText("2")
        dialog.start.setValue(3)
        dialog.stop.setValue(6)
        dialog.accept()

    _export(viewer, qtbot, fill)
    qtbot.waitUntil(out.is_dir, timeout=TIMEOUT)
    assert [p.name for p in out.iterdir()] == ["bob"]
    assert sorted(p.name for p in (out / "bob").iterdir()) == [f"{i:05d}.png" for i in range(3, 7)]


def test_dialog_lists_the_one_registry_and_follows_its_suffixes(
    viewer, qtbot, monkeypatch, run, tmp_path
):
    from napari_sam2_worms.export import FORMATS

    _open(viewer, qtbot, monkeypatch, run)
    seen = {}

    def fill(dialog):
        seen["items"] = [
            (dialog.fmt.itemData(i), dialog.fmt.itemText(i)) for i in range(dialog.fmt.count())
        ]
        dialog.path.setText(str(tmp_path / "tracks.csv"))
        for fmt in ("nwb", "overlay-mp4", "masks-png", "masks-tiff"):
            dialog.fmt.setCurrentIndex(dialog.fmt.findData(fmt))
            seen[fmt] = dialog.path.text()
        out = tmp_path / "labels.tif"
        dialog.path.setText(str(out))
        seen["out"] = out
        dialog.accept()

    _export(viewer, qtbot, fill)
    # every format once, in the registry's order (tracks, then the masks and the overlay)
    assert seen["items"] == [(name, f.label) for name, f in FORMATS.items()]
    assert seen["items"][-3:] == [
        ("masks-tiff", "masks-tiff (label stack TIFF)"),
        ("masks-png", "masks-png (folder of per-object PNG masks)"),
        ("overlay-mp4", "overlay-mp4 (overlay video: masks, skeletons, names (H.264))"),
    ]
    assert seen["nwb"] == str(tmp_path / "tracks.nwb")
    assert seen["overlay-mp4"] == str(tmp_path / "tracks.mp4")
    assert seen["masks-png"] == str(tmp_path / "tracks")  # a folder: no suffix
    assert seen["masks-tiff"] == str(tmp_path / "tracks.tif")
    qtbot.waitUntil(seen["out"].is_file, timeout=TIMEOUT)
    assert tifffile.imread(seen["out"]).shape[0] == 12  # the whole label stack

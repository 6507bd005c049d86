"""The package installs as a napari plugin, stays light to import, ships its manifest."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


def test_import_is_light():
    code = (
        "import sys, napari_sam2_worms as m; m.open_video; m.make_plate;"
        "mods = ('torch', 'qtpy', 'PyQt6', 'napari', 'magicgui', 'sam2');"
        "bad = [k for k in mods if k in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_manifest_valid_and_discovered():
    from npe2 import PluginManager

    out = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-sam2-worms"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    pm = PluginManager()
    pm.discover()
    assert "napari-sam2-worms" in {m.name for m in pm.iter_manifests()}
    manifest = pm.get_manifest("napari-sam2-worms")
    assert manifest.contributions.readers and manifest.contributions.widgets
    for cmd in manifest.contributions.commands:
        module, _, _attr = cmd.python_name.partition(":")
        assert module.startswith("napari_sam2_worms."), cmd.python_name


@pytest.mark.slow
def test_wheel_ships_manifest_and_entry_point(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("napari_sam2_worms-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "napari_sam2_worms/napari.yaml" in names
        manifest = zf.read("napari_sam2_worms/napari.yaml").decode()
        assert manifest == (REPO / "napari.yaml").read_text()
        ep = next(n for n in names if n.endswith("entry_points.txt"))
        text = zf.read(ep).decode()
    assert "napari-sam2-worms = napari_sam2_worms:napari.yaml" in text
    assert "napari-sam2-worms = napari_sam2_worms.cli:main" in text

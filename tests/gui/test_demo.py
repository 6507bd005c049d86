"""`napari-sam2-worms demo` opens napari with the sample plate and the tracker docked."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui


def test_demo_command_opens_sample_and_widget(monkeypatch, tmp_path, qtbot):
    import napari

    from napari_sam2_worms.cli import main
    from napari_sam2_worms.napari._menu import widget_for

    monkeypatch.setenv("NAPARI_SAM2_WORMS_CACHE", str(tmp_path))  # no checkpoint cached
    assert main(["demo", "--no-run"]) == 0
    viewer = napari.current_viewer()
    try:
        assert "Synthetic worm plate" in [layer.name for layer in viewer.layers]
        widget = widget_for(viewer)
        assert widget.model_panel.backend_name == "classic"  # fallback with a notice
    finally:
        viewer.close()

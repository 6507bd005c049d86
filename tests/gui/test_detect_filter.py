"""Detect all in the objects panel: size filter the user sets, animal name for new objects."""

from __future__ import annotations

import pytest
from qtpy.QtCore import Qt

from napari_sam2_worms.napari._widget import PROMPTS, TrackerWidget

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def plate():
    from napari_sam2_worms.synthetic import make_plate

    p = make_plate(n_frames=10, height=150, width=200, n_worms=3)
    video = p.video.copy()
    for y, x in ((20, 20), (130, 180), (20, 180), (130, 20)):  # dark specks, 5x5 px
        video[0, y : y + 5, x : x + 5] = 40  # on frame 0 only: not background
    return p, video


def _open(make_napari_viewer, video):
    viewer = make_napari_viewer()
    viewer.add_image(video, name="plate")
    widget = TrackerWidget(viewer, synchronous=True)
    viewer.window.add_dock_widget(widget)
    widget.model_panel.set_backend("classic")
    widget.load_model()
    viewer.dims.set_current_step(0, 0)
    return viewer, widget


def test_detect_all_skips_specks_and_names_the_animal(make_napari_viewer, qtbot, plate):
    p, video = plate
    viewer, widget = _open(make_napari_viewer, video)
    panel = widget.objects_panel
    panel.animal.setCurrentText("fly")
    qtbot.mouseClick(panel.detect_button, Qt.MouseButton.LeftButton)
    s = widget.session
    assert sorted(s.objects) == [1, 2, 3]  # the three worms, none of the four specks
    assert [s.objects[o].name for o in (1, 2, 3)] == ["fly1", "fly2", "fly3"]
    pts = viewer.layers[PROMPTS].data
    assert len(pts) == 3
    for _, y, x in pts:  # each click on a worm
        assert p.labels[0][round(y), round(x)] > 0
    # a free-text animal name is used by Add too
    panel.animal.setCurrentText("C. elegans")
    widget.add_object(panel.new_name())
    assert s.objects[4].name == "C. elegans4"


def test_detect_all_min_max_area(make_napari_viewer, qtbot, plate):
    p, video = plate
    viewer, widget = _open(make_napari_viewer, video)
    panel = widget.objects_panel
    panel.animal.setCurrentText("mouse")  # no worm shape test: specks pass on size only
    panel.min_area.setValue(10)
    panel.max_area.setValue(40)
    qtbot.mouseClick(panel.detect_button, Qt.MouseButton.LeftButton)
    s = widget.session
    assert len(s.objects) == 4  # the 5x5 specks only
    assert all(s.objects[o].name.startswith("mouse") for o in s.objects)
    assert len(viewer.layers[PROMPTS].data) == 4  # one click per object found
    for _, y, x in viewer.layers[PROMPTS].data:
        assert p.labels[0][round(y), round(x)] == 0
    # max below min: refused, nothing added
    panel.min_area.setValue(500)
    panel.max_area.setValue(100)
    qtbot.mouseClick(panel.detect_button, Qt.MouseButton.LeftButton)
    assert len(s.objects) == 4
    # a min area above every worm: nothing found, nothing added
    panel.max_area.setValue(0)  # auto
    panel.min_area.setValue(100_000)
    qtbot.mouseClick(panel.detect_button, Qt.MouseButton.LeftButton)
    assert len(s.objects) == 4


def test_detect_all_asks_the_backends_declared_capability(make_napari_viewer, qtbot, plate):
    """ "Detect all" follows what a backend declares, not its name or its methods."""
    from napari_sam2_worms.backends.base import Capabilities
    from napari_sam2_worms.engine.session import TrackingSession
    from napari_sam2_worms.testing.oracle import OracleBackend
    from napari_sam2_worms.video import ArrayVideo

    p, video = plate
    centres = [(float(x), float(y)) for x, y in p.head_points(0).values()]

    class Undeclared(OracleBackend):
        def detect(self, frame, **filters):  # a method alone declares nothing
            return centres

    class Detector(Undeclared):
        name = "sam2"  # the name says nothing either
        capabilities = Capabilities(detect=True)

    viewer = make_napari_viewer()
    viewer.add_image(video, name="plate")
    widget = TrackerWidget(viewer, synchronous=True)
    viewer.window.add_dock_widget(widget)
    viewer.dims.set_current_step(0, 0)  # the frame detect() looks at
    panel = widget.objects_panel
    widget.set_session(TrackingSession(ArrayVideo(video, fps=10.0), Undeclared(p.labels)))
    qtbot.mouseClick(panel.detect_button, Qt.MouseButton.LeftButton)
    assert widget.session.objects == {}  # refused with a message
    widget.set_session(TrackingSession(ArrayVideo(video, fps=10.0), Detector(p.labels)))
    qtbot.mouseClick(panel.detect_button, Qt.MouseButton.LeftButton)
    s = widget.session
    assert sorted(s.objects) == [1, 2, 3]
    for oid in (1, 2, 3):  # each object got its click and the oracle's mask
        assert (s.labels[0] == oid).sum() > 20

"""The skeletons layer: a style that reads over the masks, the frame on screen only, and
what a frame step changes (positions and hidden objects, nothing else)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from _real import TIMEOUT, dock_tracker, on_screen
from qtpy.QtCore import Qt

from napari_sam2_worms.napari import _overlay, _style
from napari_sam2_worms.skeleton import skeletonize_labels
from napari_sam2_worms.synthetic import make_plate

pytestmark = pytest.mark.gui

COLORS = {1: "#1f77b4", 2: "#ff7f0e"}


@pytest.fixture(scope="module")
def plate():
    return make_plate(n_frames=6, height=120, width=160, n_worms=2)


@pytest.fixture
def tracks(plate):
    labels = plate.labels.copy()
    labels[3][labels[3] == 2] = 0  # worm 2 not tracked on frame 3
    return skeletonize_labels(labels, [1, 2])


def _objects():
    return {o: SimpleNamespace(color=c) for o, c in COLORS.items()}


def _rgba(hex_color: str) -> np.ndarray:
    from napari_sam2_worms.napari._layers import hex_to_rgba

    return hex_to_rgba(hex_color)


def test_style_reads_over_the_masks_and_steps_move_points_only(make_napari_viewer, plate, tracks):
    viewer = make_napari_viewer()
    viewer.add_image(plate.video, name="plate")
    _style.add_display_layers(viewer)
    _style.add_display_layers(viewer)  # nothing added twice
    assert [layer.name for layer in viewer.layers] == ["plate", _style.SKELETONS]
    layer = viewer.layers[_style.SKELETONS]
    assert layer._type_string == "points" and layer.ndim == 2  # not sliced at a step

    overlay = _overlay.TrackOverlay(tracks, _objects())
    assert _overlay.show_tracks(viewer, overlay, 0)
    kinds = np.asarray(layer.features["end"], object)
    objs = np.asarray(layer.features["object"], int)
    face, size = np.asarray(layer.face_color), np.asarray(layer.size)
    border_w, border = np.asarray(layer.border_width), np.asarray(layer.border_color)
    dots, heads, tails = kinds == "centerline", kinds == "head", kinds == "tail"
    assert heads.sum() == tails.sum() == 2 and dots.sum() >= 2 * tracks.points.shape[2]
    # heads and tails are drawn after (on top of) every dot
    assert np.flatnonzero(dots).max() < np.flatnonzero(heads | tails).min()
    for oid, color in COLORS.items():
        plain = _rgba(color)
        head = face[heads & (objs == oid)][0]
        np.testing.assert_allclose(head, plain)  # the head in the object's colour
        line = face[dots & (objs == oid)]
        # the centerline lighter than the mask's plain colour, so it reads over it
        assert (line[:, :3] >= plain[:3] - 1e-6).all() and (line[:, :3] > plain[:3] + 0.1).any()
    assert size[heads].min() > size[tails].max() > size[dots].max()
    assert size[dots].min() == _style.CENTERLINE_WIDTH
    assert np.allclose(face[tails][:, :3], _style.TAIL_FACE[None, :3])  # dark tails
    assert (border_w[heads | tails] > 0).all() and (border_w[dots] == 0).all()
    np.testing.assert_allclose(border[heads | tails], 1.0)  # white rims

    # a step moves the points; colours, sizes, features stay; worm 2 is hidden on frame 3
    nsteps = viewer.dims.nsteps
    for frame in (1, 3, 4):
        assert _overlay.show_frame(viewer, overlay, frame)
        np.testing.assert_array_equal(layer.face_color, face)
        np.testing.assert_array_equal(layer.size, size)
        shown = np.asarray(layer.shown, bool)
        ti = list(tracks.frames).index(frame)
        for oid in (1, 2):
            pts = tracks.points[ti, tracks.index_of(oid)]
            tracked = bool(np.isfinite(pts).all())
            assert tracked == (oid == 1 or frame != 3)
            # all of an object's points shown, or none
            assert shown[objs == oid].all() == tracked and shown[objs == oid].any() == tracked
            if tracked:
                rc = np.asarray(layer.data)[heads & (objs == oid)][0]
                np.testing.assert_allclose(rc, pts[0, ::-1], atol=1e-6)
    assert viewer.dims.nsteps == nsteps  # the overlay lies within the frame


def test_an_older_layer_of_that_name_is_replaced(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 30, 40), np.uint8))
    viewer.add_vectors(np.zeros((0, 2, 3)), ndim=3, name=_style.SKELETONS)  # an older version
    _style.add_display_layers(viewer)
    layer = viewer.layers[_style.SKELETONS]
    assert layer._type_string == "points" and layer.ndim == 2


def test_hidden_while_stepping_then_shown_on_the_frame_on_screen(make_napari_viewer, qtbot):
    from napari_sam2_worms.napari._widget import PROMPTS

    plate = make_plate(n_frames=12, height=120, width=160, n_worms=2)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(plate.video, name="plate")
    widget = dock_tracker(viewer, qtbot)
    widget.model_panel.set_backend("classic")
    qtbot.mouseClick(widget.model_panel.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.session is not None, timeout=TIMEOUT)
    viewer.dims.set_current_step(0, 0)
    for x, y in plate.head_points(0).values():
        qtbot.mouseClick(widget.objects_panel.add_button, Qt.MouseButton.LeftButton)
        viewer.layers[PROMPTS].add(np.array([0, y, x], float))  # the points layer's add
        qtbot.waitUntil(lambda: not widget._prompt_busy, timeout=TIMEOUT)
    qtbot.mouseClick(widget.propagate_panel.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: not widget.running and widget.tracks_fresh and not widget._workers,
        timeout=TIMEOUT,
    )
    layer = viewer.layers[_style.SKELETONS]
    box = widget.review_panel.show_skeletons
    box.click()  # "Show centerlines and heads" off
    assert not layer.visible
    viewer.dims.set_current_step(0, 7)
    box.click()  # on again: the layer shows frame 7 at once
    assert layer.visible
    heads, _, _ = on_screen(viewer, [7])
    tracks = widget.tracks
    ti = list(tracks.frames).index(7)
    for oid in widget.session.objects:
        pts = tracks.points[ti, tracks.index_of(oid)]
        np.testing.assert_allclose(heads[(7, oid)], pts[0, ::-1], atol=1e-6)


def test_new_tracks_with_fewer_or_more_objects(make_napari_viewer, plate, tracks):
    """An object removed (fewer slots), then back (more): the layer follows, no error."""
    viewer = make_napari_viewer()
    viewer.add_image(plate.video, name="plate")
    _style.add_display_layers(viewer)
    layer = viewer.layers[_style.SKELETONS]
    objects = _objects()
    for known in ({1, 2}, {1}, {1, 2}):
        overlay = _overlay.TrackOverlay(tracks, {o: objects[o] for o in known})
        assert _overlay.show_tracks(viewer, overlay, 0)
        assert len(layer.data) == len(overlay.colors) == len(layer.face_color)
        heads = np.asarray(layer.features["end"], object) == "head"
        assert set(np.asarray(layer.features["object"], int)[heads].tolist()) == known
        assert _overlay.show_frame(viewer, overlay, 1)

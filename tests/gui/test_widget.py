"""The dock widget's script path (``synchronous=True``: generators run inline), random
SAM 2, and Cancel with the real worker. The user's own paths (menus, canvas clicks, real
workers) are in test_user_paths.py."""

from __future__ import annotations

import numpy as np
import pytest
from _real import TIMEOUT, assert_heads_match
from qtpy.QtCore import Qt

from fixtures.masks import iou
from napari_sam2_worms.napari import _menu
from napari_sam2_worms.napari._widget import HEADS, MASKS, PROMPTS, SKELETONS, TrackerWidget

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def plate():
    from napari_sam2_worms.synthetic import make_plate

    return make_plate(n_frames=10, height=150, width=200, n_worms=3)


def _open(make_napari_viewer, video, backend="classic", synchronous=True, **sam2):
    viewer = make_napari_viewer()
    viewer.add_image(video, name="plate")
    widget = TrackerWidget(viewer, synchronous=synchronous)
    viewer.window.add_dock_widget(widget)
    widget.model_panel.set_backend(backend)
    widget.model_panel.sam2_options.update(sam2)
    return viewer, widget


def _click(widget, frame, x, y, negative=False):
    widget.objects_panel.negative.setChecked(negative)
    widget.viewer.layers[PROMPTS].add(np.array([frame, y, x], float))


def _match(truth_frame: np.ndarray, label_frame: np.ndarray, oid: int) -> float:
    """IoU of object ``oid`` with the ground-truth worm it overlaps most."""
    m = label_frame == oid
    ids, counts = np.unique(truth_frame[m], return_counts=True)
    keep = ids > 0
    if not keep.any():
        return 0.0
    gt = ids[keep][np.argmax(counts[keep])]
    return iou(m, truth_frame == gt)


def test_classic_workflow(make_napari_viewer, plate, tmp_path):
    from napari_sam2_worms.video import ArrayVideo

    viewer, widget = _open(make_napari_viewer, ArrayVideo(plate.video, fps=plate.fps))
    widget.load_model()
    s = widget.session
    assert s is not None and s.backend.name == "classic"
    assert {MASKS, PROMPTS, SKELETONS, HEADS} <= {layer.name for layer in viewer.layers}

    # objects and clicks: a click adds a positive point for the current object
    heads = plate.head_points(0)
    for oid, (x, y) in heads.items():
        assert widget.add_object() == oid
        _click(widget, 0, x, y)
    assert sorted(s.objects) == [1, 2, 3]
    assert s.prompts.points[(0, 2)][0][2] is True
    points = viewer.layers[PROMPTS]
    np.testing.assert_allclose(
        points.face_color[1, :3], np.array([0xFF, 0x7F, 0x0E]) / 255, atol=0.01
    )
    labels = viewer.layers[MASKS]
    for oid in heads:
        assert (labels.data[0] == oid).sum() > 20
    # labels colormap in object colours
    np.testing.assert_allclose(
        labels.colormap.map(np.array([2]))[0, :3], points.face_color[1, :3], atol=0.01
    )

    # a wrong negative click, then delete it: session follows the layer
    widget.objects_panel.select(1)
    _click(widget, 0, heads[1][0], heads[1][1], negative=True)
    assert [p[2] for p in s.prompts.points[(0, 1)]] == [True, False]
    points.selected_data = {len(points.data) - 1}
    points.remove_selected()
    assert [p[2] for p in s.prompts.points[(0, 1)]] == [True]
    # Shift-click: negative (the press callback runs before napari adds the point)
    from types import SimpleNamespace

    widget.objects_panel.negative.setChecked(False)
    press = SimpleNamespace(type="mouse_press", modifiers=("Shift",))
    widget._on_press(points, press)
    points.add(np.array([0, heads[1][1] + 1, heads[1][0]], float))
    assert [p[2] for p in s.prompts.points[(0, 1)]] == [True, False]
    assert points.symbol[-1].value == "x"
    points.selected_data = {len(points.data) - 1}
    points.remove_selected()

    # propagate forward, layer equals session, quality vs ground truth
    widget.propagate("forward")
    assert widget.propagate_panel.progress.value() == s.n_frames
    np.testing.assert_array_equal(labels.data, s.labels)
    ious = [_match(plate.labels[t], s.labels[t], o) for t in range(s.n_frames) for o in s.objects]
    assert np.mean(ious) > 0.8, np.mean(ious)
    # autosaved after the propagation: reopening gives the same masks
    import tifffile

    from napari_sam2_worms.engine.session_io import autosave_dir

    np.testing.assert_array_equal(tifffile.imread(autosave_dir(s) / "masks.tif"), s.labels)

    # skeletons: the session's tracks (what the export writes) on every frame
    assert widget.tracks_fresh
    assert assert_heads_match(viewer, s.skeletons()) >= 0.9 * 3 * s.n_frames
    assert set(viewer.layers[SKELETONS].features["object"]) == {1, 2, 3}

    # correction: go to frame 5 (where the propagation left the view depends on the
    # throttled follow), paint object 2 there as a small blob, use it, re-propagate
    widget.goto(5)
    painted = labels.data[5].copy()
    painted[painted == 2] = 0
    ys, xs = np.nonzero(plate.labels[5] == plate.labels[5][s.labels[5] == 2].max())
    painted[ys, xs] = 2
    labels.data[5] = painted
    widget.objects_panel.select(2)
    widget.use_painted_mask()
    assert (5, 2) in s.prompts.masks
    np.testing.assert_array_equal(s.labels[5] == 2, painted == 2)
    widget.repropagate("forward")
    np.testing.assert_array_equal(labels.data, s.labels)

    # review: flag events (runs of one object and kind) are listed and navigable
    widget.update_flags()
    events = widget.review_panel.flags
    assert widget.review_panel.list.count() == len(events)
    # worms 2 and 3 cross on this plate: their frames are flagged "touching", worm 1's not
    touching = {(t, e.object_id) for e in events if e.kind == "touching"
                for t in range(e.start, e.stop + 1)}  # fmt: skip
    assert {o for _, o in touching} == {2, 3}
    truth = {(t, k + 1) for t, k in zip(*np.nonzero(plate.touching))}
    assert len(touching & truth) >= 0.8 * len(truth), str((sorted(touching), sorted(truth)))
    # consecutive frames of one object and kind are one event
    runs = {(e.object_id, e.kind) for e in events}
    assert len(events) < len(touching) and len(runs) <= len(events)
    widget.goto(0)
    widget.review_panel.list.setCurrentRow(-1)
    widget.review_panel.step(+1)
    assert widget.current_frame() == min(e.start for e in events if e.start > 0)
    row = widget.review_panel.list.currentRow()
    widget.review_panel.step(-1)
    assert widget.review_panel.list.currentRow() == (row - 1) % len(events)
    widget.objects_panel.select(2)  # the review step selected its event's object
    widget.flip_head_tail(2, 4)
    assert s.flips[-1] == (2, 2, 4)
    assert_heads_match(viewer, s.skeletons())

    # export and save/open session
    out = _menu.export_tracks_to(widget, tmp_path / "tracks.csv", "csv")
    assert out.is_file() and out.stat().st_size > 100
    ov = _menu.export_tracks_to(widget, tmp_path / "ov.mp4", "overlay-mp4", frames=(0, 3))
    from napari_sam2_worms.video import open_video

    assert len(open_video(ov)) == 4
    pngs = _menu.export_tracks_to(widget, tmp_path / "png", "masks-png", objects=[1])
    assert len(list(pngs.rglob("*.png"))) == s.n_frames
    _menu.save_session_to(widget, tmp_path / "session")
    saved = s.labels.copy()
    labels.data[:] = 0
    widget.session.labels[:] = 0
    _menu.open_session_from(widget, tmp_path / "session")
    assert widget.session is not s
    np.testing.assert_array_equal(widget.session.labels, saved)
    np.testing.assert_array_equal(viewer.layers[MASKS].data, saved)
    assert widget.session.flips == [(2, 2, 4)]


def test_remove_object_and_no_session_warning(make_napari_viewer, plate):
    from napari_sam2_worms.video import ArrayVideo

    viewer, widget = _open(make_napari_viewer, ArrayVideo(plate.video[:3], fps=plate.fps))
    widget.propagate("forward")  # no session: only a notification
    assert widget.session is None
    widget.load_model()
    widget.detect_objects()
    s = widget.session
    assert len(s.objects) >= 2
    widget.remove_object(1)
    assert 1 not in s.objects
    assert not (viewer.layers[MASKS].data == 1).any()
    assert 1 not in set(viewer.layers[PROMPTS].features["object"])
    widget.close()
    from napari_sam2_worms.napari._widget import widget_for

    with pytest.raises(LookupError):
        widget_for(viewer)
    # a re-opened widget reuses the layers and reacts to clicks again
    again = TrackerWidget(viewer, synchronous=True)
    assert widget_for(viewer) is again
    again.model_panel.set_backend("classic")
    again.load_model()
    oid = again.add_object()
    x, y = again.session.backend.detect(0)[0]
    _click(again, 0, x, y)
    assert (again.session.labels[0] == oid).sum() > 20
    np.testing.assert_array_equal(viewer.layers[MASKS].data[0], again.session.labels[0])


def test_threaded_propagation(make_napari_viewer, plate, qtbot):
    from napari_sam2_worms.video import ArrayVideo

    viewer, widget = _open(
        make_napari_viewer, ArrayVideo(plate.video, fps=plate.fps), synchronous=False
    )
    widget.load_model()
    qtbot.waitUntil(lambda: widget.session is not None, timeout=20000)
    for x, y in plate.head_points(0).values():
        widget.add_object()
        _click(widget, 0, x, y)
    widget.propagate("forward")
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running and widget.tracks_fresh, timeout=TIMEOUT)
    s = widget.session
    assert len(s.computed_frames()) == s.n_frames
    np.testing.assert_array_equal(viewer.layers[MASKS].data, s.labels)
    assert_heads_match(viewer, s.skeletons())


@pytest.mark.slow
def test_random_sam2(make_napari_viewer, tmp_path, qtbot):
    """SAM 2 (random weights) in the real workers: load, clicks, propagation, the heads
    equal to the session's tracks, and Cancel after the frame in flight."""
    pytest.importorskip("sam2")
    from napari_sam2_worms.synthetic import make_plate
    from napari_sam2_worms.testing.random_sam2 import make_random_checkpoint
    from napari_sam2_worms.video import ArrayVideo

    plate = make_plate(n_frames=4, height=64, width=64, n_worms=2)
    ckpt = make_random_checkpoint(tmp_path / "random.pt")
    viewer, widget = _open(
        make_napari_viewer,
        ArrayVideo(plate.video, fps=plate.fps),
        backend="sam2",
        synchronous=False,
        image_size=256,
    )
    widget.model_panel.checkpoint.setText(str(ckpt.path))
    widget.model_panel.device.setCurrentText("cpu")
    widget.load_model()
    qtbot.waitUntil(lambda: widget.session is not None, timeout=TIMEOUT * 3)
    s = widget.session
    assert s.backend.name == "sam2"
    for x, y in plate.head_points(0).values():
        widget.add_object()
        _click(widget, 0, x, y)
    qtbot.waitUntil(
        lambda: len(s.prompts.points) == 2 and not widget._prompt_busy, timeout=TIMEOUT * 3
    )
    widget.propagate("forward")
    qtbot.waitUntil(lambda: not widget.running and widget.tracks_fresh, timeout=TIMEOUT * 3)
    labels = viewer.layers[MASKS].data
    np.testing.assert_array_equal(labels, s.labels)
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert set(np.unique(labels[0])) - {0}  # the prompted frame has masks (not all empty)
    assert len(s.computed_frames()) == 4
    assert_heads_match(viewer, s.skeletons())
    # Cancel once the first frame is in: the frame in flight is the last
    for o in s.scores:
        s.scores[o][1:] = np.nan
    widget.propagate("forward")
    qtbot.waitUntil(lambda: widget.propagate_panel.progress.value() >= 1, timeout=TIMEOUT * 3)
    done = int((~np.isnan(s.scores[1])).sum())
    widget.cancel()
    assert widget.propagate_panel.progress.format() == "Cancelling…"
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT * 3)
    assert int((~np.isnan(s.scores[1])).sum()) <= done + 1
    np.testing.assert_array_equal(viewer.layers[MASKS].data, s.labels)
    qtbot.waitUntil(lambda: widget.tracks_fresh and not widget._workers, timeout=TIMEOUT)


def test_sam2_without_checkpoint_falls_back(make_napari_viewer, plate, tmp_path, monkeypatch):
    from napari_sam2_worms.video import ArrayVideo

    monkeypatch.setenv("NAPARI_SAM2_WORMS_CACHE", str(tmp_path))
    _viewer, widget = _open(
        make_napari_viewer, ArrayVideo(plate.video[:2], fps=plate.fps), backend="sam2"
    )
    widget.load_model()
    assert widget.model_panel.backend_name == "classic"
    assert widget.session is not None and widget.session.backend.name == "classic"


def test_sample_data():
    from napari_sam2_worms.napari._sample_data import synthetic_plate
    from napari_sam2_worms.video import ArrayVideo

    [(video, meta, kind)] = synthetic_plate(n_frames=3, height=64, width=80, n_worms=1)
    assert kind == "image" and isinstance(video, ArrayVideo)
    assert video.shape == (3, 64, 80)
    assert meta["metadata"]["ground_truth_labels"].shape == (3, 64, 80)


def test_cancel_stops_the_worker(make_napari_viewer, plate, qtbot):
    """Cancel (the button, real worker) stops after the frame in flight, says
    "Cancelling..." until it has, and leaves the layers equal to the session."""
    import time

    from napari_sam2_worms.video import ArrayVideo

    viewer, widget = _open(
        make_napari_viewer, ArrayVideo(plate.video, fps=plate.fps), synchronous=False
    )
    widget.load_model()
    qtbot.waitUntil(lambda: widget.session is not None, timeout=TIMEOUT)
    s = widget.session
    widget.propagate("forward")  # no prompts yet: a notification, nothing computed
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert len(s.computed_frames()) == 0 and widget.propagate_panel.run_button.isEnabled()
    widget.add_object()
    x, y = plate.head_points(0)[1]
    _click(widget, 0, x, y)
    qtbot.waitUntil(lambda: (0, 1) in s.prompts.points and not widget._prompt_busy)
    # a slow backend (0.3 s a frame), so that the run is still going when Cancel is pressed
    real = s.backend.propagate

    def slow(*args, **kwargs):
        for result in real(*args, **kwargs):
            time.sleep(0.3)
            yield result

    s.backend.propagate = slow
    panel = widget.propagate_panel
    qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(s.computed_frames()) >= 2, timeout=TIMEOUT)
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    at_cancel = len(s.computed_frames())
    assert widget.running and panel.progress.format() == "Cancelling…"
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert at_cancel <= len(s.computed_frames()) <= at_cancel + 1  # the frame in flight
    assert len(s.computed_frames()) < s.n_frames
    assert panel.progress.format() != "Cancelling…" and panel.run_button.isEnabled()
    np.testing.assert_array_equal(viewer.layers[MASKS].data, s.labels)
    qtbot.waitUntil(lambda: widget.tracks_fresh and not widget._workers, timeout=TIMEOUT)


def test_propagate_keeps_the_callers_frames(make_napari_viewer, plate):
    """``propagate(None, start, stop)`` with the panel on "forward" tracks start..stop only."""
    from napari_sam2_worms.video import ArrayVideo

    _viewer, widget = _open(make_napari_viewer, ArrayVideo(plate.video, fps=plate.fps))
    widget.load_model()
    s = widget.session
    for oid, (x, y) in plate.head_points(2).items():
        assert widget.add_object() == oid
        _click(widget, 2, x, y)
    assert widget.propagate_panel.selection()[0] == "forward"
    widget.propagate(None, 2, 5)
    tracked = {t for t in range(s.n_frames) if s.labels[t].any()}
    assert tracked == {2, 3, 4, 5}

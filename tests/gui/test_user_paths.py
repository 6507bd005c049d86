"""The napari workflow as a user runs it: the sample from File > Open Sample, the tracker
docked from the Plugins menu, real mouse clicks on the canvas, propagation in the real
``thread_worker``, export / save / open from File > IO Utilities > SAM 2 worm tracker,
and the heads on screen equal to the exported heads on every frame, also after a flip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _real import (
    TIMEOUT,
    assert_heads_match,
    click,
    dock_tracker,
    drag,
    menu_action,
    run_menu_with_dialog,
    shown_ends,
    worm_centres,
)
from qtpy.QtCore import Qt

from napari_sam2_worms.napari._widget import HEADS, MASKS, PROMPTS, SKELETONS

pytestmark = pytest.mark.gui

IO = ("File", "IO Utilities", "SAM 2 worm tracker")


@pytest.fixture
def viewer(make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_SAM2_WORMS_CACHE", str(tmp_path / "cache"))  # no checkpoint
    return make_napari_viewer(show=True)


def _open_sample(viewer, qtbot):
    sample = ("File", "Open Sample", "SAM 2 Worm Tracker", "Synthetic worm plate")
    menu_action(viewer, *sample).trigger()
    qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=TIMEOUT)
    viewer.dims.set_current_step(0, 0)  # napari opens on the middle frame
    return viewer.layers[0]


def _load(widget, qtbot):
    qtbot.mouseClick(widget.model_panel.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.session is not None, timeout=TIMEOUT)
    return widget.session


def _clicked(widget, frame: int, oid: int, n: int = 1) -> bool:
    """The session has ``n`` clicks of ``oid`` on ``frame`` and their mask (worker done)."""
    pts = widget.session.prompts.points.get((frame, oid), [])
    return len(pts) == n and not widget._prompt_busy


def _settled(widget) -> bool:
    return not widget.running and widget.tracks_fresh and not widget._workers


def _export_csv(viewer, qtbot, path):
    def fill(dialog):
        dialog.fmt.setCurrentIndex(dialog.fmt.findData("csv"))
        dialog.path.setText(str(path))
        dialog.accept()

    run_menu_with_dialog(qtbot, menu_action(viewer, *IO, "Export skeleton tracks..."), fill)
    qtbot.waitUntil(path.is_file, timeout=TIMEOUT)
    from napari_sam2_worms.skeleton import read_csv

    return read_csv(path)


def test_menu_commands_without_the_widget_say_so(viewer, qtbot):
    import napari_sam2_worms.napari._menu as menu

    seen = []
    orig = menu.show_warning
    menu.show_warning = lambda msg: (seen.append(msg), orig(msg))
    try:
        menu_action(viewer, *IO, "Export skeleton tracks...").trigger()
    finally:
        menu.show_warning = orig
    assert seen and "open the tracker first" in seen[0]
    # docked: the same menu item finds the widget (napari passes a PublicOnlyProxy)
    widget = dock_tracker(viewer, qtbot)
    seen.clear()
    menu.show_warning = lambda msg: (seen.append(msg), orig(msg))
    try:
        menu_action(viewer, *IO, "Export skeleton tracks...").trigger()
    finally:
        menu.show_warning = orig
    assert seen and "no tracking session yet" in seen[0]
    assert widget.session is None


def test_click_propagate_export_flip_save_open(viewer, qtbot, tmp_path, monkeypatch):
    image = _open_sample(viewer, qtbot)
    truth = image.metadata["ground_truth_labels"]
    widget = dock_tracker(viewer, qtbot)
    assert widget.model_panel.backend_name == "classic"  # no checkpoint here
    s = _load(widget, qtbot)
    panel = widget.model_panel
    ready = panel.status.text()
    assert "ready" in ready
    # the status line follows a new choice, and comes back when it is undone
    panel.set_backend("sam2")
    panel.checkpoint.setText(str(tmp_path / "mine.pt"))
    assert "Press 'Load model'" in panel.status.text() and ready in panel.status.text()
    panel.set_backend("classic")
    assert panel.status.text() == ready
    points = viewer.layers[PROMPTS]
    assert viewer.layers.selection.active is points and str(points.mode) == "add"

    # one object and one real click per worm on frame 0
    centres = worm_centres(truth[0])
    for gt, (r, c) in centres.items():
        qtbot.mouseClick(widget.objects_panel.add_button, Qt.MouseButton.LeftButton)
        oid = widget.current_object
        click(qtbot, viewer, points, r, c)
        qtbot.waitUntil(lambda oid=oid: _clicked(widget, 0, oid), timeout=TIMEOUT)
        (x, y, positive) = s.prompts.points[(0, oid)][0]
        assert positive and abs(x - c) < 1.5 and abs(y - r) < 1.5
        assert (s.labels[0] == oid).sum() > 20
        # the mask is the clicked worm
        assert np.argmax(np.bincount(truth[0][s.labels[0] == oid])) == gt
    # Shift-click: a negative point
    oid = widget.current_object
    r, c = centres[max(centres)]
    click(qtbot, viewer, points, r + 1, c, shift=True)
    qtbot.waitUntil(lambda: _clicked(widget, 0, oid, 2), timeout=TIMEOUT)
    assert s.prompts.points[(0, oid)][1][2] is False
    points.selected_data = {len(points.data) - 1}
    points.remove_selected()
    qtbot.waitUntil(lambda: _clicked(widget, 0, oid, 1), timeout=TIMEOUT)

    # propagate with the real worker
    qtbot.mouseClick(widget.propagate_panel.run_button, Qt.MouseButton.LeftButton)
    assert widget.running
    qtbot.waitUntil(lambda: _settled(widget), timeout=TIMEOUT)
    assert len(s.computed_frames()) == s.n_frames
    np.testing.assert_array_equal(viewer.layers[MASKS].data, s.labels)
    assert viewer.layers[HEADS].opacity == 1.0  # not dimmed: up to date

    # heads, tails and centerlines on screen == exported ones, stepping through every frame
    tracks = _export_csv(viewer, qtbot, tmp_path / "tracks.csv")
    n = assert_heads_match(viewer, tracks)
    assert n >= 0.9 * s.n_frames * len(s.objects)
    line = viewer.layers[SKELETONS]
    assert line.ndim == 2  # the frame on screen only: napari does not slice it at a step
    assert set(np.asarray(line.features["object"]).tolist()) == set(s.objects)

    # Update flags: events, Next jumps from event to event
    qtbot.mouseClick(widget.review_panel.update_button, Qt.MouseButton.LeftButton)
    events = widget.review_panel.flags
    assert widget.review_panel.list.count() == len(events)
    if len(events) >= 2:
        widget.goto(0)
        widget.review_panel.list.setCurrentRow(-1)
        qtbot.mouseClick(widget.review_panel.next_button, Qt.MouseButton.LeftButton)
        first = widget.review_panel.list.currentRow()
        qtbot.mouseClick(widget.review_panel.next_button, Qt.MouseButton.LeftButton)
        assert widget.review_panel.list.currentRow() == (first + 1) % len(events)
        assert widget.current_frame() == events[(first + 1) % len(events)].start

    # flip head/tail of object 2 on frames 10-20: on screen at once, and in the export
    widget.objects_panel.select(2)
    before = shown_ends(viewer, "tail", range(10, 21))
    widget.review_panel.flip_start.setValue(10)
    widget.review_panel.flip_stop.setValue(20)
    qtbot.mouseClick(widget.review_panel.flip_button, Qt.MouseButton.LeftButton)
    now = shown_ends(viewer, "head", range(10, 21))  # no waiting: at once
    for t in range(10, 21):
        if (t, 2) in before:
            np.testing.assert_allclose(now[(t, 2)], before[(t, 2)], atol=1e-3)
    flipped = _export_csv(viewer, qtbot, tmp_path / "flipped.csv")
    assert_heads_match(viewer, flipped)
    assert (flipped.flipped[10:21, flipped.index_of(2)]).all()

    # save into a folder that does not exist yet (File menu; only the dialog is patched)
    from qtpy.QtWidgets import QFileDialog

    folder = tmp_path / "new" / "my-session"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(folder), ""))
    labels = s.labels.copy()
    menu_action(viewer, *IO, "Save tracking session...").trigger()
    assert (folder / "session.json").is_file()
    saved = json.loads((folder / "session.json").read_text())
    stamp = (folder / "session.json").stat().st_mtime_ns
    # a later propagation autosaves elsewhere: the manual save is never overwritten
    widget.goto(30)
    qtbot.mouseClick(widget.propagate_panel.repropagate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: _settled(widget), timeout=TIMEOUT)
    assert (folder / "session.json").stat().st_mtime_ns == stamp

    # open it back (File menu; only the folder dialog is patched)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    menu_action(viewer, *IO, "Open tracking session...").trigger()
    s2 = widget.session
    assert s2 is not s and s2.flips == [(2, 10, 20)]
    np.testing.assert_array_equal(s2.labels, labels)
    assert "session from 'my-session'" in widget.model_panel.status.text()
    qtbot.waitUntil(lambda: _settled(widget), timeout=TIMEOUT)
    assert_heads_match(viewer, s2.skeletons())
    assert saved["objects"]


def test_painting_follows_the_current_object(viewer, qtbot):
    image = _open_sample(viewer, qtbot)
    truth = image.metadata["ground_truth_labels"]
    widget = dock_tracker(viewer, qtbot)
    s = _load(widget, qtbot)
    points = viewer.layers[PROMPTS]
    centres = worm_centres(truth[0])
    for r, c in list(centres.values())[:2]:
        qtbot.mouseClick(widget.objects_panel.add_button, Qt.MouseButton.LeftButton)
        click(qtbot, viewer, points, r, c)
    qtbot.waitUntil(lambda: len(s.prompts.points) == 2 and not widget._prompt_busy, timeout=TIMEOUT)
    labels = viewer.layers[MASKS]
    widget.objects_panel.select(1)
    assert labels.selected_label == 1
    widget.objects_panel.select(2)
    assert labels.selected_label == 2  # the label follows the current object

    # a stroke with another object's label is refused (undone, with a message)
    labels.selected_label = 1
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    labels.brush_size = 5
    before = labels.data[0].copy()
    r, c = centres[2]
    drag(qtbot, viewer, labels, [(r - 4, c - 4), (r, c), (r + 4, c + 4)])
    np.testing.assert_array_equal(labels.data[0], before)
    assert labels.selected_label == 2

    # painting the current object grows it; "Use painted mask" takes it and the prompts
    # layer is back in add mode
    area = int((s.labels[0] == 2).sum())
    ys, xs = np.nonzero(s.labels[0] == 2)
    r0, c0 = float(ys.min()), float(xs.min())
    drag(qtbot, viewer, labels, [(r0 - 6, c0 - 6), (r0 - 2, c0 - 2)])
    assert (labels.data[0] == 2).sum() > area
    qtbot.mouseClick(widget.propagate_panel.paint_button, Qt.MouseButton.LeftButton)
    assert (0, 2) in s.prompts.masks
    assert int((s.labels[0] == 2).sum()) > area
    assert (s.labels[0] == 1).sum() > 20  # the other worm kept
    assert viewer.layers.selection.active is points and str(points.mode) == "add"


def test_session_refusals_are_notifications(viewer, qtbot, monkeypatch):
    """A name already in use (the session refuses it) is a one-line warning; nothing is
    added and the widget keeps working."""
    import napari_sam2_worms.napari._widget as w

    _open_sample(viewer, qtbot)
    widget = dock_tracker(viewer, qtbot)
    s = _load(widget, qtbot)
    seen = []
    monkeypatch.setattr(w, "show_warning", seen.append)
    widget.objects_panel.name.setText("alpha")
    qtbot.mouseClick(widget.objects_panel.add_button, Qt.MouseButton.LeftButton)
    assert [o.name for o in s.objects.values()] == ["alpha"]
    qtbot.mouseClick(widget.objects_panel.add_button, Qt.MouseButton.LeftButton)
    assert [o.name for o in s.objects.values()] == ["alpha"]
    assert len(seen) == 1 and "alpha" in seen[0] and "\n" not in seen[0]
    assert widget.objects_panel.list.count() == 1

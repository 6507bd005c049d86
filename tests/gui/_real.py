"""Helpers for GUI tests that take the user's paths: real menus, real canvas mouse events."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPoint, Qt, QTimer
from qtpy.QtWidgets import QApplication

TIMEOUT = 60000  # ms, for qtbot.waitUntil on a shared 2-core machine


def menu_action(viewer, *path: str):
    """The QAction of the real menu bar at ``path`` (texts without '&', e.g. "File",
    "IO Utilities", "SAM 2 worm tracker", "Export skeleton tracks...")."""
    menu_bar = viewer.window._qt_window.menuBar()
    actions = menu_bar.actions()
    for i, name in enumerate(path):
        found = None
        for action in actions:
            text = action.text().replace("&", "")
            if text == name or text.startswith(name + " ("):
                found = action
                break
        assert found is not None, f"no menu item {name!r} under {path[:i]}: " + str(
            [a.text() for a in actions]
        )
        if i == len(path) - 1:
            return found
        actions = found.menu().actions()
    raise AssertionError(path)


def dock_tracker(viewer, qtbot):
    """Dock the tracker through Plugins > SAM 2 worm tracker; returns the widget."""
    from napari_sam2_worms.napari._widget import widget_for

    menu_action(viewer, "Plugins", "SAM 2 worm tracker").trigger()
    qtbot.waitUntil(lambda: _docked(viewer), timeout=TIMEOUT)
    return widget_for(viewer)


def _docked(viewer) -> bool:
    from napari_sam2_worms.napari._widget import widget_for

    try:
        widget_for(viewer)
    except LookupError:
        return False
    return True


def canvas(viewer):
    return viewer.window._qt_viewer.canvas


def canvas_pos(viewer, layer, row: float, col: float) -> QPoint:
    """Where the data point (row, col) of ``layer`` is on the canvas widget (Qt pixels)."""
    c = canvas(viewer)
    node = c.layer_to_visual[layer].node
    x, y = node.get_transform(map_from="visual", map_to="canvas").map([col, row])[:2]
    return QPoint(int(round(x)), int(round(y)))


def click(qtbot, viewer, layer, row: float, col: float, shift: bool = False) -> None:
    """A real left click (press and release through Qt and vispy) at (row, col)."""
    native = canvas(viewer).native
    pos = canvas_pos(viewer, layer, row, col)
    mod = Qt.KeyboardModifier.ShiftModifier if shift else Qt.KeyboardModifier.NoModifier
    qtbot.mouseMove(native, pos)
    qtbot.mousePress(native, Qt.MouseButton.LeftButton, mod, pos)
    qtbot.mouseRelease(native, Qt.MouseButton.LeftButton, mod, pos)
    QApplication.processEvents()


def drag(qtbot, viewer, layer, points) -> None:
    """A real left-button drag through the (row, col) ``points`` (painting)."""
    from qtpy.QtCore import QEvent, QPointF
    from qtpy.QtGui import QMouseEvent

    native = canvas(viewer).native
    pos = [canvas_pos(viewer, layer, r, c) for r, c in points]
    qtbot.mouseMove(native, pos[0])
    qtbot.mousePress(native, Qt.MouseButton.LeftButton, pos=pos[0])
    for p in pos[1:]:
        ev = QMouseEvent(
            QEvent.Type.MouseMove,
            QPointF(p),
            QPointF(native.mapToGlobal(p)),
            Qt.MouseButton.NoButton,
            Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier,
        )
        QApplication.sendEvent(native, ev)
        QApplication.processEvents()
    qtbot.mouseRelease(native, Qt.MouseButton.LeftButton, pos=pos[-1])
    QApplication.processEvents()


def run_menu_with_dialog(qtbot, action, fill) -> None:
    """Trigger a menu action that opens a modal dialog; ``fill(dialog)`` runs once the
    dialog is up (it sets fields and accepts it)."""
    done = {"ok": False}

    def poll():
        dialog = QApplication.activeModalWidget()
        if dialog is None:
            QTimer.singleShot(20, poll)
            return
        fill(dialog)
        done["ok"] = True

    QTimer.singleShot(0, poll)
    action.trigger()
    qtbot.waitUntil(lambda: done["ok"], timeout=TIMEOUT)


def worm_centres(truth_frame: np.ndarray) -> dict[int, tuple[float, float]]:
    """Ground-truth worm id -> (row, col) of its innermost pixel."""
    from scipy import ndimage

    out = {}
    for gt in range(1, int(truth_frame.max()) + 1):
        mask = truth_frame == gt
        if mask.any():
            dist = ndimage.distance_transform_edt(mask)
            r, c = np.unravel_index(np.argmax(dist), mask.shape)
            out[gt] = (float(r), float(c))
    return out


def on_screen(viewer, frames=None) -> tuple[dict, dict, dict]:
    """Step the viewer through ``frames`` (default: all) and read the skeletons layer.

    Returns three dicts keyed by (frame, object): head (row, col), tail (row, col) and
    the centerline's dots (D, 2) in order, as shown on each frame (points not ``shown``
    are hidden).
    """
    from napari_sam2_worms.napari._style import SKELETONS

    here = viewer.dims.current_step[0]
    frames = range(viewer.dims.nsteps[0]) if frames is None else frames
    heads, tails, lines = {}, {}, {}
    for t in frames:
        viewer.dims.set_current_step(0, int(t))
        layer = viewer.layers[SKELETONS]
        shown = np.asarray(layer.shown, bool)
        data = np.asarray(layer.data)[shown]
        objs = np.asarray(layer.features["object"], int)[shown]
        kinds = np.asarray(layer.features["end"], object)[shown]
        for kind, out in (("head", heads), ("tail", tails)):
            for rc, o in zip(data[kinds == kind], objs[kinds == kind]):
                out[(int(t), int(o))] = rc
        dots = kinds == "centerline"
        for o in dict.fromkeys(objs[dots].tolist()):
            lines[(int(t), int(o))] = data[dots & (objs == o)]
    viewer.dims.set_current_step(0, here)
    return heads, tails, lines


def shown_ends(viewer, end: str = "head", frames=None) -> dict[tuple[int, int], np.ndarray]:
    """(frame, object) -> (row, col) of the heads (or tails) on screen on ``frames``."""
    heads, tails, _ = on_screen(viewer, frames)
    return heads if end == "head" else tails


def assert_heads_match(viewer, tracks, frames=None) -> int:
    """On every frame, the heads, tails and centerlines on screen are those of ``tracks``
    (x, y, head first) and nothing else is shown; returns how many were compared."""
    frames = np.asarray(tracks.frames, int) if frames is None else frames
    heads, tails, lines = on_screen(viewer, frames)
    want = {}
    for ti, t in enumerate(np.asarray(tracks.frames, int)):
        if t not in frames:
            continue
        for k, oid in enumerate(tracks.object_ids):
            pts = np.asarray(tracks.points[ti, k], float)
            if np.isfinite(pts).all():
                want[(int(t), int(oid))] = pts[:, ::-1]
    assert set(heads) == set(want), (sorted(set(heads) ^ set(want)))[:10]
    assert set(tails) == set(want) and set(lines) == set(want)
    for key, rc in want.items():
        np.testing.assert_allclose(heads[key], rc[0], atol=0.01, err_msg=str(key))
        np.testing.assert_allclose(tails[key], rc[-1], atol=0.01, err_msg=str(key))
        # the centerline's dots: its points (every r-th dot) and dots between them
        dots, n = lines[key], len(rc)
        r, rest = divmod(len(dots) - 1, n - 1)
        assert rest == 0 and r >= 1, (key, len(dots), n)
        np.testing.assert_allclose(dots[::r], rc, atol=0.01, err_msg=str(key))
        gap = np.linalg.norm(np.diff(dots, axis=0), axis=1)
        assert gap.max() <= 1.0 + 1e-6, (key, gap.max())  # reads as a line
    return len(want)

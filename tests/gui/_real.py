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


def heads_by_frame(layer) -> dict[tuple[int, int], np.ndarray]:
    """(frame, object) -> (row, col) of the Points layer ``layer`` (heads or tails)."""
    data = np.asarray(layer.data)
    objs = np.asarray(layer.features["object"], int)
    return {(int(round(d[0])), int(o)): d[1:] for d, o in zip(data, objs)}


def assert_heads_match(layer, tracks, frames=None) -> int:
    """Every (frame, object) head of ``tracks`` (x, y, head first) is on the layer at
    the same place, and nothing else is; returns how many were compared."""
    shown = heads_by_frame(layer)
    want = {}
    for ti, t in enumerate(np.asarray(tracks.frames, int)):
        if frames is not None and t not in frames:
            continue
        for k, oid in enumerate(tracks.object_ids):
            pts = np.asarray(tracks.points[ti, k], float)
            if np.isfinite(pts).all():
                want[(int(t), int(oid))] = pts[0, ::-1]
    if frames is not None:
        shown = {k: v for k, v in shown.items() if k[0] in frames}
    assert set(shown) == set(want), (sorted(set(shown) ^ set(want)))[:10]
    for key, rc in want.items():
        np.testing.assert_allclose(shown[key], rc, atol=0.01, err_msg=str(key))
    return len(want)

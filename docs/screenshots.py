"""Make the user-guide screenshots through the user's paths (docs/images/guide_*.png).

Run it with a display, e.g. headless::

    xvfb-run -a -s "-screen 0 1280x1024x24" python3 docs/screenshots.py

It uses the synthetic plate and the classic backend (no checkpoint needed).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "images"
WIDTH = 1100  # pixels of the saved images (keeps each PNG well under 200 KB)

log = logging.getLogger("screenshots")


def _save(array: np.ndarray, name: str) -> Path:
    from PIL import Image

    img = Image.fromarray(np.asarray(array)[..., :3])
    if img.width > WIDTH:
        img = img.resize((WIDTH, round(img.height * WIDTH / img.width)), Image.LANCZOS)
    img = img.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    path = OUT / f"guide_{name}.png"
    img.save(path, optimize=True)
    log.info("wrote %s (%d KB)", path, path.stat().st_size // 1024)
    return path


def _shot(viewer, name: str) -> Path:
    from qtpy.QtWidgets import QApplication

    viewer.reset_view()
    for _ in range(5):
        QApplication.processEvents()
    return _save(viewer.screenshot(canvas_only=False, flash=False), name)


def _menu_action(viewer, *path: str):
    """The QAction of the real menu bar at ``path`` (texts as shown, without '&')."""
    actions = viewer.window._qt_window.menuBar().actions()
    for i, name in enumerate(path):
        action = next(
            a for a in actions if a.text().replace("&", "") in (name,) or
            a.text().replace("&", "").startswith(name + " (")
        )  # fmt: skip
        if i == len(path) - 1:
            return action
        actions = action.menu().actions()
    raise LookupError(path)


def _wait(cond, timeout: float = 300.0) -> None:
    import time

    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while not cond():
        QApplication.processEvents()
        time.sleep(0.01)
        if time.monotonic() > end:
            raise TimeoutError("the widget did not finish in time")


def _click(viewer, layer, row: float, col: float) -> None:
    """A real left click on the canvas at the data point (row, col) of ``layer``."""
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest

    canvas = viewer.window._qt_viewer.canvas
    node = canvas.layer_to_visual[layer].node
    x, y = node.get_transform(map_from="visual", map_to="canvas").map([col, row])[:2]
    pos = QPoint(int(round(x)), int(round(y)))
    QTest.mouseMove(canvas.native, pos)
    QTest.mouseClick(canvas.native, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pos)


def _grab(widget) -> np.ndarray:
    pix = widget.grab()
    img = pix.toImage().convertToFormat(pix.toImage().Format.Format_RGB888)
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    arr = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine())
    return arr[:, : img.width() * 3].reshape(img.height(), img.width(), 3).copy()


def main() -> None:
    """The guide's steps through the user's paths: File > Open Sample, Plugins menu, the
    widget's buttons, clicks on the canvas, the real worker threads, the File menu."""
    import os
    import tempfile

    import napari
    from qtpy.QtCore import Qt, QTimer
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication
    from scipy import ndimage

    from napari_sam2_worms.napari._widget import MASKS, PROMPTS, widget_for

    logging.basicConfig(level=logging.INFO)
    OUT.mkdir(parents=True, exist_ok=True)
    # autosaves of this run go to a temporary folder, not the user's cache
    os.environ.setdefault("NAPARI_SAM2_WORMS_AUTOSAVE", tempfile.mkdtemp(prefix="shots-"))
    viewer = napari.Viewer(title="napari-sam2-worms")
    viewer.window._qt_window.resize(1280, 860)
    for _ in range(10):  # the menus are built by the event loop
        QApplication.processEvents()
    _menu_action(
        viewer, "File", "Open Sample", "SAM 2 Worm Tracker", "Synthetic worm plate"
    ).trigger()
    _wait(lambda: len(viewer.layers) == 1)
    truth = viewer.layers[0].metadata["ground_truth_labels"]
    _menu_action(viewer, "Plugins", "SAM 2 worm tracker").trigger()
    widget = widget_for(viewer)
    widget.model_panel.set_backend("classic")
    viewer.dims.set_current_step(0, 0)
    _shot(viewer, "1_open")

    def press(button) -> None:
        QTest.mouseClick(button, Qt.MouseButton.LeftButton)

    def settled() -> bool:
        return not widget.running and widget.tracks_fresh and not widget._workers

    # 2. load the model, add objects, one click inside each worm on the canvas
    press(widget.model_panel.load_button)
    _wait(lambda: widget.session is not None)
    viewer.reset_view()
    points = viewer.layers[PROMPTS]
    for gt in range(1, int(truth[0].max()) + 1):
        mask = truth[0] == gt
        if not mask.any():
            continue
        dist = ndimage.distance_transform_edt(mask)
        r, c = np.unravel_index(np.argmax(dist), mask.shape)
        press(widget.objects_panel.add_button)
        _click(viewer, points, r, c)
        _wait(lambda: not widget._prompt_busy)
    _wait(settled)
    _shot(viewer, "2_prompts")

    # 3. propagate forward (worker thread); frame 20 with centerlines, heads and tails
    press(widget.propagate_panel.run_button)
    _wait(settled)
    widget.goto(20)
    _shot(viewer, "3_propagate")

    # 4. correct: the masks layer paints the current object
    labels = viewer.layers[MASKS]
    widget.objects_panel.select(1)
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    widget.goto(25)
    _shot(viewer, "4_correct")
    widget._prompts_ready()

    # 5. review: flag events, Next
    press(widget.review_panel.update_button)
    _wait(lambda: not widget._workers)
    widget.goto(0)
    press(widget.review_panel.next_button)
    from qtpy.QtWidgets import QScrollArea

    scroll = widget.findChild(QScrollArea)
    scroll.ensureWidgetVisible(widget.review_panel)
    _shot(viewer, "5_review")

    # 6. the export dialog, from File > IO Utilities > SAM 2 worm tracker
    def grab_dialog() -> None:
        dialog = QApplication.activeModalWidget()
        if dialog is None:
            QTimer.singleShot(50, grab_dialog)
            return
        for _ in range(5):
            QApplication.processEvents()
        _save(_grab(dialog), "6_export")
        dialog.reject()

    QTimer.singleShot(0, grab_dialog)
    _menu_action(
        viewer, "File", "IO Utilities", "SAM 2 worm tracker", "Export skeleton tracks..."
    ).trigger()
    viewer.close()


if __name__ == "__main__":
    main()

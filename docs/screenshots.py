"""Make the user-guide screenshots by driving the real widget (docs/images/guide_*.png).

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


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_sam2_worms.napari import _menu
    from napari_sam2_worms.napari._sample_data import synthetic_plate
    from napari_sam2_worms.napari._widget import MASKS, PROMPTS, TrackerWidget

    logging.basicConfig(level=logging.INFO)
    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-sam2-worms")
    viewer.window._qt_window.resize(1280, 860)
    [(video, meta, _)] = synthetic_plate(n_frames=40, height=240, width=320, n_worms=4)
    truth = meta["metadata"]["ground_truth_labels"]
    viewer.add_image(video, **meta)
    widget = TrackerWidget(viewer, synchronous=True)
    viewer.window.add_dock_widget(widget, name="SAM 2 worm tracker", area="right")
    widget.model_panel.set_backend("classic")
    viewer.dims.set_current_step(0, 0)
    _shot(viewer, "1_open")

    # 2. load the model, add objects by clicking (here: one click inside each worm)
    widget.load_model()
    points = viewer.layers[PROMPTS]
    from scipy import ndimage

    for gt in range(1, int(truth[0].max()) + 1):
        mask = truth[0] == gt
        if not mask.any():
            continue
        dist = ndimage.distance_transform_edt(mask)
        r, c = np.unravel_index(np.argmax(dist), mask.shape)
        widget.add_object()
        points.add(np.array([0, r, c], float))
    _shot(viewer, "2_prompts")

    # 3. propagate forward; show frame 20 with skeletons
    widget.propagate("forward")
    widget.goto(20)
    _shot(viewer, "3_propagate")

    # 4. correct: paint on a frame, use the painted mask, re-propagate
    labels = viewer.layers[MASKS]
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    labels.selected_label = 1
    widget.objects_panel.select(1)
    widget.goto(25)
    _shot(viewer, "4_correct")

    # 5. review: flagged frames, next flagged frame
    widget.update_flags()
    widget.goto(0)
    widget.review_panel.step(+1)
    _shot(viewer, "5_review")

    # 6. export dialog
    dialog = _menu.ExportDialog(widget, widget)
    dialog.show()
    for _ in range(5):
        QApplication.processEvents()
    pix = dialog.grab()
    img = pix.toImage().convertToFormat(pix.toImage().Format.Format_RGB888)
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    arr = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine())[
        :, : img.width() * 3
    ]
    _save(arr.reshape(img.height(), img.width(), 3).copy(), "6_export")
    dialog.close()
    viewer.close()


if __name__ == "__main__":
    main()

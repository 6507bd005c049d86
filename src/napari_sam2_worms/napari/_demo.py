"""``napari-sam2-worms demo``: napari with the synthetic plate and the tracker docked."""

from __future__ import annotations

from napari.utils.notifications import show_info

from ..backends.factory import sam2_available
from ._widget import TrackerWidget


def launch_demo(backend: str = "auto"):
    """Open napari with the synthetic plate and the tracker docked; returns the viewer.

    ``backend``: "auto" (SAM 2 when a checkpoint is cached, else classic with a notice),
    "sam2" or "classic". Does not call ``napari.run()``.
    """
    import napari

    from ._sample_data import synthetic_plate

    viewer = napari.Viewer(title="napari-sam2-worms demo")
    for data, meta, _kind in synthetic_plate():
        viewer.add_image(data, **meta)
    widget = TrackerWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SAM 2 worm tracker", area="right")
    if backend == "auto":
        backend = "sam2" if sam2_available() else "classic"
        if backend == "classic":
            show_info(
                "No SAM 2 checkpoint is cached: the classic tracker is selected. Press "
                "'Download checkpoint' (or choose a file) to use SAM 2."
            )
    widget.model_panel.set_backend(backend)
    return viewer


def run_demo(backend: str = "auto", run: bool = True):
    """Open the demo and, unless ``run`` is False, start napari's event loop."""
    import napari

    viewer = launch_demo(backend)
    if run:
        napari.run()
    return viewer

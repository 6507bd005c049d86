"""How centerlines, heads and tails look on top of the masks (one place for the style).

A centerline is drawn in a light tone of the object's colour, wider than the mask's edge,
so it reads over its own mask (drawn at half opacity in the plain colour) and over the
plate. The head is a large disc in the object's colour with a white rim; the tail a small
dark dot with a white rim. (A dark outline under each centerline reads even better, but it
is one more layer to slice at every frame step: stepping cost counts more.)
"""

from __future__ import annotations

import numpy as np

#: Layer names (the widget finds its layers by these).
SKELETONS = "skeletons"
HEADS = "heads"
TAILS = "tails"
LAYERS = (SKELETONS, TAILS, HEADS)  # bottom to top

#: Centerline width (screen pixels: readable at any zoom) and how much lighter than the
#: object's colour it is drawn.
CENTERLINE_WIDTH = 3.0
CENTERLINE_LIGHTEN = 0.55

#: Head marker: object colour, white rim; tail marker: small, dark with a white rim.
HEAD_SIZE = 11.0
HEAD_BORDER = np.array([1.0, 1.0, 1.0, 1.0])
HEAD_BORDER_WIDTH = 0.25  # relative to the size
TAIL_SIZE = 6.0
TAIL_FACE = np.array([0.1, 0.1, 0.1, 1.0])

#: While the skeletons are being recomputed (after a propagation or a correction) they are
#: dimmed: what is shown is the previous result.
STALE_OPACITY = 0.35


def lighten(rgba: np.ndarray, amount: float = CENTERLINE_LIGHTEN) -> np.ndarray:
    """The colours ``rgba`` (..., 4) moved towards white by ``amount`` (alpha kept): the
    centerline stands out from its mask, drawn in the plain colour."""
    out = np.array(rgba, float, copy=True)
    out[..., :3] = out[..., :3] + (1.0 - out[..., :3]) * amount
    return out


def add_display_layers(viewer) -> None:
    """Add the centerline, tail and head layers (in this order: heads on top) where they
    are missing. Nothing is added twice."""
    names = {layer.name for layer in viewer.layers}
    if SKELETONS not in names:
        viewer.add_vectors(
            np.zeros((0, 2, 3)),
            name=SKELETONS,
            edge_color="white",
            edge_width=CENTERLINE_WIDTH,
            vector_style="line",
            out_of_slice_display=False,
        )
    if TAILS not in names:
        viewer.add_points(
            np.zeros((0, 3)),
            ndim=3,
            name=TAILS,
            size=TAIL_SIZE,
            face_color=TAIL_FACE,
            border_color=HEAD_BORDER,
            border_width=HEAD_BORDER_WIDTH,
        )
    if HEADS not in names:
        viewer.add_points(
            np.zeros((0, 3)),
            ndim=3,
            name=HEADS,
            size=HEAD_SIZE,
            border_color=HEAD_BORDER,
            border_width=HEAD_BORDER_WIDTH,
        )


def set_stale(viewer, stale: bool) -> None:
    """Dim the skeleton layers while they show an earlier result."""
    opacity = STALE_OPACITY if stale else 1.0
    for name in LAYERS:
        if name in viewer.layers and viewer.layers[name].opacity != opacity:
            viewer.layers[name].opacity = opacity


def set_visible(viewer, visible: bool) -> None:
    """Show or hide the skeleton layers (only those that change: a change redraws)."""
    for name in LAYERS:
        if name in viewer.layers and viewer.layers[name].visible != visible:
            viewer.layers[name].visible = visible

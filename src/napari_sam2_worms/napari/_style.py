"""How centerlines, heads and tails look on top of the masks (one place for the style).

A centerline is drawn twice: a dark, wider outline underneath and the object's colour on
top, so it reads over its own mask (drawn in the same colour) and over the plate. The head
is a large disc in the object's colour with a white rim; the tail a small dark dot.
"""

from __future__ import annotations

import numpy as np

#: Layer names (the widget finds its layers by these).
SKELETONS = "skeletons"
OUTLINES = "skeleton outlines"
HEADS = "heads"
TAILS = "tails"

#: Centerline width and the outline's (screen pixels: they stay readable at any zoom).
CENTERLINE_WIDTH = 2.0
OUTLINE_WIDTH = 5.0
OUTLINE_COLOR = np.array([0.0, 0.0, 0.0, 0.85])

#: Head marker: object colour, white rim; tail marker: small, dark with a white rim.
HEAD_SIZE = 11.0
HEAD_BORDER = np.array([1.0, 1.0, 1.0, 1.0])
HEAD_BORDER_WIDTH = 0.25  # relative to the size
TAIL_SIZE = 6.0
TAIL_FACE = np.array([0.1, 0.1, 0.1, 1.0])

#: While the skeletons are being recomputed (after a propagation or a correction) they are
#: dimmed: what is shown is the previous result.
STALE_OPACITY = 0.35


def lighten(rgba: np.ndarray, amount: float = 0.35) -> np.ndarray:
    """The colours ``rgba`` (..., 4) moved towards white by ``amount`` (alpha kept): the
    centerline stands out from its mask, drawn in the plain colour."""
    out = np.array(rgba, float, copy=True)
    out[..., :3] = out[..., :3] + (1.0 - out[..., :3]) * amount
    return out


def vectors_kwargs(width: float, *, outline: bool = False) -> dict:
    """Keyword arguments of ``viewer.add_vectors`` for centerline segments."""
    return {
        "edge_width": width,
        "vector_style": "line",
        "out_of_slice_display": False,
        "blending": "translucent_no_depth" if outline else "translucent",
        "opacity": 1.0,
    }


def add_display_layers(viewer) -> None:
    """Add the outline, centerline, tail and head layers (in this order: heads on top)
    where they are missing. Nothing is added twice."""
    names = {layer.name for layer in viewer.layers}
    empty_vec = np.zeros((0, 2, 3))
    if OUTLINES not in names:
        viewer.add_vectors(
            empty_vec, name=OUTLINES, edge_color="black", **vectors_kwargs(OUTLINE_WIDTH)
        )
    if SKELETONS not in names:
        viewer.add_vectors(
            empty_vec, name=SKELETONS, edge_color="white", **vectors_kwargs(CENTERLINE_WIDTH)
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
    for name in (OUTLINES, SKELETONS, TAILS, HEADS):
        layer = viewer.layers[name]
        layer.editable = False if name in (OUTLINES, SKELETONS) else layer.editable


def set_stale(viewer, stale: bool) -> None:
    """Dim the skeleton layers while they show an earlier result."""
    for name in (OUTLINES, SKELETONS, TAILS, HEADS):
        if name in viewer.layers:
            viewer.layers[name].opacity = STALE_OPACITY if stale else 1.0

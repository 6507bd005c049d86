"""How centerlines, heads and tails look on top of the masks (one place for the style).

The centerlines, heads and tails of the frame on screen are in one 2D Points layer (see
:mod:`._overlay`): a centerline is a row of overlapping dots (at most
:data:`DOT_SPACING` apart, so it reads as a line), then the heads and the tails on top.
A centerline is drawn in a light tone of the object's colour, wider than the mask's edge,
so it reads over its own mask (drawn at half opacity in the plain colour) and over the
plate. The head is a large disc in the object's colour with a white rim; the tail a small
dark dot with a white rim. (One Points layer rather than a Vectors layer for the lines
and a Points layer for the ends: at a frame step napari redraws one layer, and a Vectors
layer rebuilds its shader program at every data change. A dark outline under each
centerline would read even better, but it is one more layer to draw at every step.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import napari

#: Layer names (the widget finds its layers by these).
SKELETONS = "skeletons"
#: The heads and the tails are in the :data:`SKELETONS` layer too (feature ``end``:
#: "centerline", "head" or "tail").
ENDS = HEADS = TAILS = SKELETONS
LAYERS = (SKELETONS,)

#: Centerline width (data pixels, as the masks), the largest gap between two of its dots
#: (data pixels) and how much lighter than the object's colour it is drawn.
CENTERLINE_WIDTH = 3.0
DOT_SPACING = 1.0
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
    """Move the colours ``rgba`` (..., 4) towards white by ``amount``, alpha kept.

    The centerline, drawn in the lightened colour, stands out from its mask, drawn in the
    plain colour.
    """
    out = np.array(rgba, float, copy=True)
    out[..., :3] = out[..., :3] + (1.0 - out[..., :3]) * amount
    return out


def _is_ours(layer: object) -> bool:
    return getattr(layer, "_type_string", None) == "points" and getattr(layer, "ndim", 0) == 2


def add_display_layers(viewer: napari.Viewer) -> None:
    """Add the skeletons layer (centerlines, heads and tails) where it is missing.

    Nothing is added twice; a layer of that name from an older version (3D, or another
    kind) is replaced.
    """
    if SKELETONS in viewer.layers and not _is_ours(viewer.layers[SKELETONS]):
        viewer.layers.remove(SKELETONS)
    if SKELETONS not in viewer.layers:
        viewer.add_points(
            np.zeros((0, 2)),
            ndim=2,
            name=SKELETONS,
            size=HEAD_SIZE,
            border_color=HEAD_BORDER,
            border_width=HEAD_BORDER_WIDTH,
            features={"object": np.zeros(0, int), "end": np.zeros(0, dtype=object)},
        )


def set_stale(viewer: napari.Viewer, stale: bool) -> None:
    """Dim the skeleton layers while they show an earlier result."""
    opacity = STALE_OPACITY if stale else 1.0
    for name in LAYERS:
        if name in viewer.layers and viewer.layers[name].opacity != opacity:
            viewer.layers[name].opacity = opacity


def set_visible(viewer: napari.Viewer, visible: bool) -> None:
    """Show or hide the skeleton layers (only those that change: a change redraws)."""
    for name in LAYERS:
        if name in viewer.layers and viewer.layers[name].visible != visible:
            viewer.layers[name].visible = visible

"""The centerlines, heads and tails of the frame on screen, in one 2D Points layer.

The skeleton tracks (:meth:`TrackingSession.skeletons`, what every export writes) are kept
as they are, one array over all frames; at each frame step the centerlines, heads and
tails of that frame go into the 2D "skeletons" Points layer. napari does not slice a 2D
layer when the frame changes, and the update is as small as it can be: each object has
fixed slots in the layer (the dots of its centerline, its head, its tail), so features,
colours and sizes are set once per tracks and a step only moves the points (an object not
tracked on a frame is hidden: its points not ``shown``). The viewer's dims bookkeeping at
a data change is skipped (the overlay lies within the frame). Memory stays that of the
tracks, however long the video.

A centerline of N points is drawn as ``(N - 1) * r + 1`` dots: its points and ``r - 1``
evenly spaced dots between two of them, ``r`` chosen so that dots are at most
:data:`._style.DOT_SPACING` apart on every frame (point ``k`` is dot ``k * r``).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _style
from ._layers import hex_to_rgba

if TYPE_CHECKING:
    from collections.abc import Iterator

    import napari

    from ..skeleton import SkeletonTracks

LINE, HEAD, TAIL = "centerline", "head", "tail"


#: At most this many dots between two centerline points (long, coarse centerlines).
MAX_DOTS_PER_SEGMENT = 16


class TrackOverlay:
    """The per-frame view of skeleton tracks (head = point 0, tail = the last point).

    Parameters
    ----------
    tracks
        The tracks every export writes (oriented over time, with the user's flips). They
        are read, not copied: after changing them in place (a flip), make a new overlay.
    session_objects
        Object id -> object (for its colour); tracks of unknown objects are not shown.
    """

    def __init__(self, tracks: SkeletonTracks, session_objects: dict) -> None:
        pts = np.asarray(tracks.points, float)  # (T, K, N, 2) (x, y)
        ids = [int(o) for o in tracks.object_ids]
        keep = [k for k, o in enumerate(ids) if o in session_objects]
        if pts.ndim != 4 or pts.shape[2] < 2:
            pts, keep = np.zeros((len(tracks.frames), 0, 2, 2)), []
        # (T, M, N, 2); no copy when every object is known (long videos: the tracks' size)
        self.points = pts if keep == list(range(pts.shape[1])) else pts[:, keep]
        self.ids = np.array([ids[k] for k in keep], int)
        self._row = {int(f): i for i, f in enumerate(np.asarray(tracks.frames, int))}
        m, n = len(self.ids), self.points.shape[2]
        self.per_segment = r = _dots_per_segment(self.points)
        self.n_dots = d = (n - 1) * r + 1
        u = np.arange(d) / r
        self._i0 = np.minimum(u.astype(int), n - 2)
        self._frac = (u - self._i0)[None, :, None]
        palette = np.array(
            [hex_to_rgba(session_objects[o].color) for o in self.ids.tolist()], float
        ).reshape(-1, 4)
        #: the fixed slots: the d dots of object k at k * d ..., then m heads, then m tails
        self.colors = np.concatenate(
            [
                np.repeat(_style.lighten(palette), d, axis=0),
                palette,
                np.tile(_style.TAIL_FACE, (m, 1)),
            ]
        ).reshape(-1, 4)
        self.sizes = np.r_[
            np.full(m * d, _style.CENTERLINE_WIDTH),
            np.full(m, _style.HEAD_SIZE),
            np.full(m, _style.TAIL_SIZE),
        ]
        self.border_widths = np.r_[np.zeros(m * d), np.full(2 * m, _style.HEAD_BORDER_WIDTH)]
        self.objects = np.r_[np.repeat(self.ids, d), self.ids, self.ids].astype(int)
        self.kinds = np.array([LINE] * (m * d) + [HEAD] * m + [TAIL] * m, dtype=object)
        self.shown_present: np.ndarray | None = None  # what the layer shows now

    def frame(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the points of ``frame`` in the slots and which objects are tracked there.

        Returns
        -------
        data : (M * D + 2M, 2) (row, col): the D dots of each centerline, the M heads, the
            M tails (zeros where an object is not tracked).
        present : (M,) bool: the centerline is all finite (hidden otherwise).
        """
        m, n = self.points.shape[1], self.points.shape[2]
        ti = self._row.get(int(frame))
        rc = np.zeros((m, n, 2)) if ti is None else self.points[ti][..., ::-1]
        present = np.isfinite(rc).all(axis=(1, 2))
        rc = np.where(present[:, None, None], rc, 0.0)
        dots = rc[:, self._i0] * (1.0 - self._frac) + rc[:, self._i0 + 1] * self._frac
        dots[:, :: self.per_segment] = rc  # the centerline's own points, exactly
        data = np.concatenate([dots.reshape(-1, 2), rc[:, 0], rc[:, -1]])
        return data, present

    def shown(self, present: np.ndarray) -> np.ndarray:
        """Return the per-point ``shown`` of the layer for the objects ``present``."""
        return np.r_[np.repeat(present, self.n_dots), present, present].astype(bool)


def _dots_per_segment(points: np.ndarray) -> int:
    """Return the dots per centerline segment that keep dots within the spacing."""
    if points.size == 0:
        return 1
    d = np.diff(points, axis=2)
    sq = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]
    with np.errstate(invalid="ignore"):
        top = np.fmax.reduce(sq, axis=None)  # NaN (untracked) ignored; NaN if all are
    longest = float(np.sqrt(top)) if np.isfinite(top) else 0.0
    r = int(np.ceil(longest / _style.DOT_SPACING)) if longest > 0 else 1
    return int(min(max(r, 1), MAX_DOTS_PER_SEGMENT))


@contextlib.contextmanager
def _quiet(layer: Any) -> Iterator[None]:
    """Change ``layer`` without its events and refreshes (the caller refreshes once).

    The viewer recomputes its dims from every layer at each data event (~10 ms); the
    overlay lies within the frame, so the dims do not change and that is skipped.
    """
    block = getattr(layer, "_block_refresh", contextlib.nullcontext)
    with layer.events.blocker_all(), block():
        yield


def _layer_of(viewer: napari.Viewer) -> Any:
    return next((la for la in viewer.layers if la.name == _style.SKELETONS), None)


def show_tracks(viewer: napari.Viewer, overlay: TrackOverlay, frame: int) -> bool:
    """Put ``overlay`` into the layer of ``viewer``, showing ``frame``; False without it.

    Sets everything (slots, features, colours, sizes); a frame step then only moves the
    points (:func:`show_frame`).
    """
    layer = _layer_of(viewer)
    if layer is None:
        return False
    data, present = overlay.frame(frame)
    layer.selected_data = set()
    if len(layer.data) != len(data):
        # new slots: the layer slices the new data first (the colour setters below reach
        # vispy through the colour manager's own events, not blocked: with the view of the
        # old, longer data they would index past its end)
        layer.data = data
    with _quiet(layer):
        layer.data = data
        layer.features = {"object": overlay.objects, "end": overlay.kinds}
        if len(data):
            layer.face_color = overlay.colors
            layer.border_color = _style.HEAD_BORDER
            layer.border_width = overlay.border_widths
            layer.size = overlay.sizes
            layer.shown = overlay.shown(present)
    overlay.shown_present = present
    layer.refresh(highlight=False)
    return True


def show_frame(viewer: napari.Viewer, overlay: TrackOverlay, frame: int) -> bool:
    """Move the overlay's points to ``frame`` (a frame step: data only, where it can).

    Everything is set again (:func:`show_tracks`) when the layer does not hold the
    overlay's slots (changed by hand, or replaced).
    """
    layer = _layer_of(viewer)
    if layer is None:
        return False
    data, present = overlay.frame(frame)
    if len(layer.data) != len(data) or overlay.shown_present is None:
        return show_tracks(viewer, overlay, frame)
    with _quiet(layer):
        layer.data = data
        if not np.array_equal(present, overlay.shown_present):
            layer.shown = overlay.shown(present)
    overlay.shown_present = present
    layer.refresh(thumbnail=False, highlight=False, extent=False)
    return True


def current_frame(viewer: napari.Viewer) -> int:
    """Return the frame on screen (the first dims axis, as the widget's)."""
    step = viewer.dims.current_step
    return int(step[0]) if len(step) else 0

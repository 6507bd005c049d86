"""The centerlines, heads and tails of the frame on screen, in two 2D layers.

The skeleton tracks (:meth:`TrackingSession.skeletons`, what every export writes) are kept
as they are, one array over all frames; at each frame step the centerlines of that frame
go into the 2D "skeletons" Vectors layer and its heads and tails into the 2D "heads and
tails" Points layer. napari does not slice a 2D layer when the frame changes, and the
update is as small as it can be: each object has fixed slots in both layers (its N - 1
segments, its head and its tail), so the features, colours and sizes are set once per
tracks and a step only moves the points (an object not tracked on a frame is hidden: its
head and tail not ``shown``, its segments transparent). The viewer's dims bookkeeping at a
data change is skipped (the overlay lies within the frame). Memory stays that of the
tracks, however long the video.
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

HEAD, TAIL = "head", "tail"


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
        self.points = pts[:, keep]  # (T, M, N, 2)
        self.ids = np.array([ids[k] for k in keep], int)
        self._row = {int(f): i for i, f in enumerate(np.asarray(tracks.frames, int))}
        m, n = len(self.ids), self.points.shape[2]
        palette = np.array(
            [hex_to_rgba(session_objects[o].color) for o in self.ids.tolist()], float
        ).reshape(-1, 4)
        #: the fixed slots: segments k * (n - 1) ... of object k; heads 0..m-1, tails m..2m-1
        self.segment_colors = np.repeat(_style.lighten(palette), n - 1, axis=0)
        self.segment_objects = np.repeat(self.ids, n - 1)
        self.end_colors = np.concatenate([palette, np.tile(_style.TAIL_FACE, (m, 1))])
        self.end_sizes = np.r_[np.full(m, _style.HEAD_SIZE), np.full(m, _style.TAIL_SIZE)]
        self.end_objects = np.r_[self.ids, self.ids]
        self.end_kinds = np.array([HEAD] * m + [TAIL] * m, dtype=object)
        self.shown_present: np.ndarray | None = None  # what the layers show now

    def frame(self, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the segments, the heads and tails and which objects are tracked on ``frame``.

        Returns
        -------
        segments : (M * (N - 1), 2, 2) start (row, col) and (drow, dcol) of each segment.
        ends : (2M, 2) the M heads, then the M tails (row, col).
        present : (M,) bool: the centerline is all finite (hidden otherwise).
        """
        m, n = self.points.shape[1], self.points.shape[2]
        ti = self._row.get(int(frame))
        rc = np.zeros((m, n, 2)) if ti is None else self.points[ti][..., ::-1]
        present = np.isfinite(rc).all(axis=(1, 2))
        rc = np.where(present[:, None, None], rc, 0.0)
        seg = np.stack([rc[:, :-1].reshape(-1, 2), np.diff(rc, axis=1).reshape(-1, 2)], axis=1)
        return seg, np.concatenate([rc[:, 0], rc[:, -1]]), present

    def segment_alpha(self, present: np.ndarray) -> np.ndarray:
        """Return the segment colours, transparent for the objects not ``present``."""
        colors = self.segment_colors.copy()
        n_seg = len(colors) // max(len(present), 1)
        colors[~np.repeat(present, n_seg), 3] = 0.0
        return colors


@contextlib.contextmanager
def _quiet(layer: Any) -> Iterator[None]:
    """Change ``layer`` without its events and refreshes (the caller refreshes once).

    The viewer recomputes its dims from every layer at each data event (~10 ms); the
    overlay lies within the frame, so the dims do not change and that is skipped.
    """
    block = getattr(layer, "_block_refresh", contextlib.nullcontext)
    with layer.events.blocker_all(), block():
        yield


def _layers_of(viewer: napari.Viewer) -> tuple[Any, Any] | None:
    layers = viewer.layers
    if not all(n in layers for n in _style.LAYERS):
        return None
    return layers[_style.SKELETONS], layers[_style.ENDS]


def show_tracks(viewer: napari.Viewer, overlay: TrackOverlay, frame: int) -> bool:
    """Put ``overlay`` into the layers of ``viewer``, showing ``frame``; False without them.

    Sets everything (slots, features, colours, sizes); a frame step then only moves the
    points (:func:`show_frame`).
    """
    found = _layers_of(viewer)
    if found is None:
        return False
    line, ends = found
    seg, pos, present = overlay.frame(frame)
    with _quiet(line):
        line.data = seg
        line.features = {"object": overlay.segment_objects}
        if len(seg):
            line.edge_color = overlay.segment_alpha(present)
    with _quiet(ends):
        ends.selected_data = set()
        ends.data = pos
        ends.features = {"object": overlay.end_objects, "end": overlay.end_kinds}
        if len(pos):
            ends.face_color = overlay.end_colors
            ends.border_color = _style.HEAD_BORDER
            ends.border_width = _style.HEAD_BORDER_WIDTH
            ends.size = overlay.end_sizes
            ends.shown = np.r_[present, present]
    overlay.shown_present = present
    for layer in (line, ends):
        layer.refresh(highlight=False)
    return True


def show_frame(viewer: napari.Viewer, overlay: TrackOverlay, frame: int) -> bool:
    """Move the overlay's points to ``frame`` (a frame step: data only, where it can).

    Everything is set again (:func:`show_tracks`) when the layers do not hold the
    overlay's slots (changed by hand, or replaced).
    """
    found = _layers_of(viewer)
    if found is None:
        return False
    line, ends = found
    seg, pos, present = overlay.frame(frame)
    if len(line.data) != len(seg) or len(ends.data) != len(pos) or overlay.shown_present is None:
        return show_tracks(viewer, overlay, frame)
    changed = not np.array_equal(present, overlay.shown_present)
    with _quiet(line):
        line.data = seg
        if changed and len(seg):
            line.edge_color = overlay.segment_alpha(present)
    with _quiet(ends):
        ends.data = pos
        if changed:
            ends.shown = np.r_[present, present]
    overlay.shown_present = present
    for layer in (line, ends):
        layer.refresh(thumbnail=False, highlight=False, extent=False)
    return True


def current_frame(viewer: napari.Viewer) -> int:
    """Return the frame on screen (the first dims axis, as the widget's)."""
    step = viewer.dims.current_step
    return int(step[0]) if len(step) else 0

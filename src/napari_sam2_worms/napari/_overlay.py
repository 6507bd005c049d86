"""The centerlines, heads and tails of the frame on screen, in two 2D layers.

The skeleton tracks (:meth:`TrackingSession.skeletons`, what every export writes) are kept
as they are, one array over all frames; at each frame step the centerlines of that frame
(a few dozen segments) go into the 2D "skeletons" Vectors layer and its heads and tails
into the 2D "heads and tails" Points layer. napari does not slice a 2D layer when the
frame changes, and the update skips the viewer's dims bookkeeping (the overlay lies within
the frame), so a step costs a few milliseconds of ours instead of napari slicing three 3D
layers holding every frame (and memory stays that of the tracks, however long the video).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _style
from ._layers import hex_to_rgba

if TYPE_CHECKING:
    from collections.abc import Iterator

    import napari

    from ..skeleton import SkeletonTracks

HEAD, TAIL = "head", "tail"


@dataclass
class FrameShapes:
    """What the overlay layers show on one frame, in napari (row, col) coordinates."""

    segments: np.ndarray  # (S, 2, 2): start (row, col) and (drow, dcol) of each segment
    segment_colors: np.ndarray  # (S, 4)
    segment_objects: np.ndarray  # (S,) object id
    ends: np.ndarray  # (2M, 2): the M heads, then the M tails
    end_colors: np.ndarray  # (2M, 4) face colours
    end_sizes: np.ndarray  # (2M,)
    end_objects: np.ndarray  # (2M,) object id
    end_kinds: np.ndarray  # (2M,) "head" / "tail"


def _empty() -> FrameShapes:
    return FrameShapes(
        np.zeros((0, 2, 2)),
        np.zeros((0, 4)),
        np.zeros(0, int),
        np.zeros((0, 2)),
        np.zeros((0, 4)),
        np.zeros(0),
        np.zeros(0, int),
        np.zeros(0, dtype=object),
    )


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
        self.points = np.asarray(tracks.points, float)  # (T, K, N, 2) (x, y)
        self._row = {int(f): i for i, f in enumerate(np.asarray(tracks.frames, int))}
        ids = np.array([int(o) for o in tracks.object_ids], int)
        self._known = np.array([int(o) in session_objects for o in ids], bool)
        self._ids = ids
        palette = [
            hex_to_rgba(session_objects[o].color) if o in session_objects else np.ones(4)
            for o in ids.tolist()
        ]
        self._palette = np.array(palette, float).reshape(-1, 4)
        self._line_palette = _style.lighten(self._palette)

    def frame(self, frame: int) -> FrameShapes:
        """Return the centerlines, heads and tails of ``frame`` (nothing where untracked).

        A centerline is shown where all its points are finite, exactly as in the tracks.
        """
        ti = self._row.get(int(frame))
        if ti is None or self.points.ndim != 4 or self.points.shape[2] < 2:
            return _empty()
        pts = self.points[ti]  # (K, N, 2)
        ok = np.isfinite(pts).all(axis=(1, 2)) & self._known
        k = np.nonzero(ok)[0]
        if not len(k):
            return _empty()
        rc = pts[k][..., ::-1]  # (M, N, 2) (row, col)
        n = rc.shape[1]
        seg = np.stack([rc[:, :-1].reshape(-1, 2), np.diff(rc, axis=1).reshape(-1, 2)], axis=1)
        m = len(k)
        return FrameShapes(
            segments=seg,
            segment_colors=np.repeat(self._line_palette[k], n - 1, axis=0),
            segment_objects=np.repeat(self._ids[k], n - 1),
            ends=np.concatenate([rc[:, 0], rc[:, -1]]),
            end_colors=np.concatenate([self._palette[k], np.tile(_style.TAIL_FACE, (m, 1))]),
            end_sizes=np.r_[np.full(m, _style.HEAD_SIZE), np.full(m, _style.TAIL_SIZE)],
            end_objects=np.r_[self._ids[k], self._ids[k]],
            end_kinds=np.array([HEAD] * m + [TAIL] * m, dtype=object),
        )


@contextlib.contextmanager
def _quiet(layer: Any) -> Iterator[None]:
    """Change ``layer`` without its events and refreshes; one refresh at the end.

    The viewer recomputes its dims from every layer at each data event (~10 ms); the
    overlay lies within the frame, so the dims do not change and that is skipped.
    """
    block = getattr(layer, "_block_refresh", contextlib.nullcontext)
    with layer.events.blocker_all(), block():
        yield


def show_frame(viewer: napari.Viewer, shown: FrameShapes, thumbnail: bool = False) -> bool:
    """Put ``shown`` into the overlay layers of ``viewer``; False where they are missing.

    ``thumbnail``: also update the layers' thumbnails (not at a frame step: it is the slow
    part of a small layer's refresh, and a thumbnail of one frame's lines says little).
    """
    layers = viewer.layers
    if not all(n in layers for n in _style.LAYERS):
        return False
    line, ends = layers[_style.SKELETONS], layers[_style.ENDS]
    with _quiet(line):
        line.data = shown.segments
        line.features = {"object": shown.segment_objects}
        if len(shown.segments):
            line.edge_color = shown.segment_colors
    with _quiet(ends):
        ends.selected_data = set()
        ends.data = shown.ends
        ends.features = {"object": shown.end_objects, "end": shown.end_kinds}
        if len(shown.ends):
            ends.face_color = shown.end_colors
            ends.border_color = _style.HEAD_BORDER
            ends.border_width = _style.HEAD_BORDER_WIDTH
            ends.size = shown.end_sizes
    for layer in (line, ends):
        layer.refresh(thumbnail=thumbnail, highlight=False)
    return True


def current_frame(viewer: napari.Viewer) -> int:
    """Return the frame on screen (the first dims axis, as the widget's)."""
    step = viewer.dims.current_step
    return int(step[0]) if len(step) else 0

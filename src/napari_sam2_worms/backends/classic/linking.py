"""Linking blobs to tracked objects: motion prediction, gates and gap closing.

Each object's previous mask, moved by its velocity, is overlapped with the new
blobs first (in :mod:`.backend`); the objects that overlap nothing are linked here to
the free blobs by one global assignment (:func:`scipy.optimize.linear_sum_assignment`)
on the distance to their motion prediction over a gate that grows while they are
lost, plus the area change (see :func:`match_by_distance`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import linear_sum_assignment

from .blobs import union_slices
from .region import Region

if TYPE_CHECKING:
    from .blobs import Blobs
    from .shape import Body

__all__ = ["Track", "area_factor", "match_by_distance"]


@dataclass
class Track:
    """Tracking memory of one object."""

    region: Region
    ref_area: float
    velocity: tuple[float, float] = (0.0, 0.0)  # (dx, dy) per frame, in propagation order
    lost: int = 0
    template: Body | None = None  # last unmerged body, while merged with others
    merged_for: int = 0  # frames since the merge began


def area_factor(area: float, ref: float) -> float:
    """Return 1 while ``area`` is within [0.7, 1.4] x ``ref``, falling linearly outside."""
    if ref <= 0 or area <= 0:
        return 0.0
    r = area / ref
    f = min(r, 1.0 / r)
    return 1.0 if f >= 0.7 else f / 0.7


def _base(track: Track, max_jump: float | None) -> float:
    return float(max_jump) if max_jump is not None else 1.5 * float(np.sqrt(track.ref_area))


def gate(track: Track, max_jump: float | None) -> float:
    """Return the distance gate for matching by distance: it grows while the object is lost.

    ``base * min((1 + lost) ** 1.5, 3)``: the gate reaches its widest (3 x) on the
    second lost frame (gap closing); wider, a lost worm would take an unprompted
    animal that happens to be nearby (lost frames are flagged, never filled with
    another animal).
    """
    return _base(track, max_jump) * min((1.0 + track.lost) ** 1.5, 3.0)


def gate_near(track: Track, max_jump: float | None) -> float:
    """Return the gate for blobs that continue an untracked animal.

    ``base * (1 + lost / 4)`` up to 3 x: slow, since an animal nobody tracked is more
    likely what it looks like.
    """
    return _base(track, max_jump) * (1.0 + 0.25 * min(track.lost, 8))


def predicted_centre(track: Track) -> tuple[float, float]:
    """Return the last centroid moved on by the velocity for each frame since it was seen.

    At most 5 frames of coasting: after that the worm may have turned.
    """
    cx, cy = track.region.centroid()
    k = min(track.lost, 5) + 1
    return cx + k * track.velocity[0], cy + k * track.velocity[1]


def continuing(
    free: list[int],
    blobs: Blobs,
    labels: np.ndarray,
    untracked: tuple[np.ndarray, np.ndarray] | None,
) -> np.ndarray:
    """Per free blob: does it overlap a blob no object took on the previous frame?"""
    out = np.zeros(len(free), bool)
    if untracked is None:
        return out
    prev_labels, prev_lut = untracked
    if prev_labels.shape != labels.shape:
        return out
    for j, b in enumerate(free):
        sl = blobs.slices[b - 1]
        prev = prev_labels[sl][labels[sl] == b]
        out[j] = bool(prev_lut[prev].any()) if prev.size else False
    return out


def add_fragments(
    blob: Region, overlap: np.ndarray, blobs: Blobs, labels: np.ndarray, taken: set, main: int
) -> Region:
    """Add small pieces of the same animal (broken by thresholding) to its blob."""
    extra = [
        int(b)
        for b in np.flatnonzero(overlap)
        if b != main and b not in taken and overlap[b] >= 0.5 * blobs.areas[b]
    ]
    if not extra:
        return blob
    taken.update(extra)  # nobody else may take them this frame
    sl = union_slices([blobs.slices[b - 1] for b in [main, *extra]])
    return Region.from_labels(labels, sl, [main, *extra])


def match_by_distance(
    objs: list[int],
    tracks: dict[int, Track],
    blobs: Blobs,
    labels: np.ndarray,
    taken: set[int],
    max_jump: float | None,
    untracked: tuple[np.ndarray, np.ndarray] | None,
) -> dict[int, Region]:
    """Match objects that overlap nothing to free blobs (one global assignment).

    Parameters
    ----------
    objs : list of int
        The objects to place.
    tracks : dict
        Every object's :class:`Track`.
    blobs : Blobs
        This frame's blobs; ``labels`` is their label image with prompted pixels zeroed.
    labels : numpy.ndarray
        The label image the regions are cut from.
    taken : set of int
        Blobs already claimed by overlap.
    max_jump : float or None
        The base gate (pixels); None = 1.5 x the square root of the object's area.
    untracked : tuple or None
        (labels, lut) of the previous frame's blobs no object took.

    Returns
    -------
    dict
        Object id -> the blob it takes.
    """
    free = [int(b) for b in np.flatnonzero(blobs.areas) if b > 0 and int(b) not in taken]
    out: dict[int, Region] = {}
    if not free:
        return out
    cents_l = []
    for b in free:
        sl = blobs.slices[b - 1]
        ys, xs = np.nonzero(labels[sl] == b)
        cents_l.append(
            (xs.mean() + sl[1].start, ys.mean() + sl[0].start) if ys.size else (np.inf, np.inf)
        )
    cents = np.array(cents_l, float)
    big = 1e9
    cost = np.full((len(objs), len(free)), big)
    a = blobs.areas[free].astype(float)
    cont = continuing(free, blobs, labels, untracked)
    for i, o in enumerate(objs):
        t = tracks[o]
        cx, cy = predicted_centre(t)
        g = gate(t, max_jump)
        d = np.hypot(cents[:, 0] - cx, cents[:, 1] - cy)
        r = a / max(t.ref_area, 1.0)
        ok = (d <= g) & (r >= 0.4) & (r <= 2.5)
        if t.lost and cont.any():
            # a blob that continues an animal nobody tracked on the previous frame
            # is another animal unless it is close to where this one was last seen:
            # the slow-growing gate around the last centroid (no coasting)
            lx, ly = t.region.centroid()
            near = np.hypot(cents[:, 0] - lx, cents[:, 1] - ly) <= gate_near(t, max_jump)
            ok &= ~cont | near
        # cost: distance to the motion prediction as a fraction of the gate, plus
        # the area change (|ln r| = 0.69 for half or double the area)
        cost[i, ok] = d[ok] / g + 0.5 * np.abs(np.log(r[ok]))
    rows, cols = linear_sum_assignment(cost)
    for i, j in zip(rows, cols):
        if cost[i, j] >= big:
            continue
        b = free[j]
        out[objs[i]] = Region.from_labels(labels, blobs.slices[b - 1], [b])
    return out

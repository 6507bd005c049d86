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

__all__ = ["Leftovers", "Track", "area_factor", "coasted_to", "match_by_distance"]


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


def predicted_region(track: Track, shape: tuple[int, int]) -> Region:
    """Return the last mask moved by :func:`predicted_centre`'s displacement."""
    k = min(track.lost, 5) + 1
    dx, dy = round(k * track.velocity[0]), round(k * track.velocity[1])
    return track.region.shifted(dx, dy, shape) if (dx or dy) else track.region


def predicted_centre(track: Track) -> tuple[float, float]:
    """Return the last centroid moved on by the velocity for each frame since it was seen.

    At most 5 frames of coasting: after that the worm may have turned.
    """
    cx, cy = track.region.centroid()
    k = min(track.lost, 5) + 1
    return cx + k * track.velocity[0], cy + k * track.velocity[1]


def coasted_to(track: Track, region: Region, max_jump: float | None) -> bool:
    """Tell whether a lost object found as ``region`` is where its velocity carried it.

    That is, ``region``'s centroid lies within the base gate (``max_jump``, by default
    half a worm) of :func:`predicted_centre`: the object kept moving while unseen, and
    keeps its velocity.
    """
    if track.lost == 0 or region.empty or not any(track.velocity):
        return False
    (x, y), (px, py) = region.centroid(), predicted_centre(track)
    return bool(np.hypot(x - px, y - py) <= _base(track, max_jump))


class Leftovers:
    """The pixels of one frame's animal-sized blobs that no object took, with their age.

    They are animals nobody tracked (or debris); the part of a blob an object took only
    partly counts only where it continues earlier leftovers (an untracked animal that
    merged with a tracked one), not the fringe a prompt or a clip left. Each leftover
    blob carries the step
    (frame count in propagation order) its untracked animal was first seen: the
    earliest birth among the previous frame's leftover pixels it overlaps, else now.
    On the next frame, a blob that mostly continues leftovers *older* than an
    object's last sighting is another animal (:meth:`foreign`): it was there, untracked,
    while the object was still tracked elsewhere, so a lost object is never filled
    with it. Leftovers born after the object was lost may be the object coming back.

    Parameters
    ----------
    blobs : Blobs
        The frame's blobs.
    regions : list of Region
        The masks the objects took on that frame.
    step : int
        The frame's index in the propagation (0, 1, 2, ...).
    prev : Leftovers or None
        The previous frame's leftovers (for the births).
    """

    def __init__(
        self, blobs: Blobs, regions: list[Region], step: int, prev: Leftovers | None = None
    ) -> None:
        self.labels = blobs.labels
        self.animal = blobs.areas > 0  # per label: animal-sized
        self.regions = regions
        self.step = step
        self.birth = np.full(len(blobs.areas), step, np.int64)  # per label
        if prev is not None and prev.labels.shape != self.labels.shape:
            prev = None
        covered = np.zeros(len(blobs.areas), np.int64)
        for reg in regions:
            vals = reg.values_in(self.labels)
            if vals.size:
                covered += np.bincount(vals, minlength=len(covered))[: len(covered)]
        fringe = []
        for b in np.flatnonzero(self.animal & (covered < blobs.areas)):
            sl = blobs.slices[b - 1]
            if prev is None:
                old = np.zeros(0, np.int64)
            else:
                old = prev.births(sl, (self.labels[sl] == b) & self._window(sl))
            if old.size:
                self.birth[b] = int(old.min())
            elif covered[b]:
                fringe.append(b)
        # what an object left of its own blob (a prompt or a clip took less than all of
        # it) is not an untracked animal unless it continues one
        self.animal[fringe] = False

    def _window(self, sl: tuple[slice, slice]) -> np.ndarray:
        """Return the leftover pixels in window ``sl`` as a boolean crop."""
        m = self.animal[self.labels[sl]]
        window = (sl[0].start, sl[0].stop, sl[1].start, sl[1].stop)
        for reg in self.regions:
            y0, y1, x0, x1 = reg.bounds
            if y0 < window[1] and y1 > window[0] and x0 < window[3] and x1 > window[2]:
                m &= ~reg.paste(window)
        return m

    def births(self, sl: tuple[slice, slice], inside: np.ndarray) -> np.ndarray:
        """Return the birth step of each leftover pixel under ``inside`` (a crop of ``sl``)."""
        m = inside & self._window(sl)
        return self.birth[self.labels[sl][m]]

    def _old(self, sl: tuple[slice, slice], seen: int) -> tuple[np.ndarray, np.ndarray]:
        """Split the leftovers of window ``sl`` into (born by step ``seen``, born after)."""
        m = self._window(sl)
        born = self.birth[self.labels[sl]]
        return m & (born <= seen), m & (born > seen)

    def last_seen(self, track: Track) -> int:
        """Return the step on which ``track`` was last seen (this frame minus its loss)."""
        return self.step - track.lost

    def ghost(self, blob: Region, track: Track) -> tuple[Region, Region] | None:
        """Return the untracked animal that merged into ``blob``, and the object's hint.

        The animal is the previous frame's leftover pixels in the blob's bounding box
        born by the object's last sighting, when they cover at least a quarter of the
        blob or of the object's area: the blob is then shared between the object and
        it like between two tracked worms. The hint is the younger leftovers there
        (possibly the object itself, seen while it was lost).
        """
        if blob.empty or self.labels.shape[0] < blob.bounds[1]:
            return None
        y0, y1, x0, x1 = blob.bounds
        old, young = self._old((slice(y0, y1), slice(x0, x1)), self.last_seen(track))
        if np.count_nonzero(old & blob.crop) < 0.25 * min(blob.area, track.ref_area):
            return None
        return Region(y0, x0, old).tight(), Region(y0, x0, young).tight()

    def foreign(
        self, blob_ids: list[int], track: Track, blobs: Blobs, labels: np.ndarray
    ) -> np.ndarray:
        """Tell, per blob, whether it continues an animal nobody tracked.

        A blob is foreign to an object when the previous frame's leftovers born by
        the object's last sighting cover at least a quarter of it (or of the object's
        area, when the blob is larger: an untracked animal merged with a tracked one)
        and the object's predicted mask (:func:`predicted_region`) with the younger
        leftovers covers less than a quarter as much of it. (A tracked worm touching
        an untracked one still claims the merged blob; it is then shared with the
        untracked animal: :meth:`ghost`.)
        """
        out = np.zeros(len(blob_ids), bool)
        if self.labels.shape != labels.shape:
            return out
        own = predicted_region(track, labels.shape)
        seen = self.last_seen(track)
        for j, b in enumerate(blob_ids):
            sl = blobs.slices[b - 1]
            inside = labels[sl] == b
            old, young = self._old(sl, seen)
            u = int(np.count_nonzero(inside & old))
            if u < 0.25 * min(blobs.areas[b], own.area):
                continue
            window = (sl[0].start, sl[0].stop, sl[1].start, sl[1].stop)
            mine = inside & (own.paste(window) | young)
            out[j] = 4 * int(np.count_nonzero(mine)) < u
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
    left: Leftovers | None,
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
    left : Leftovers or None
        What no object took on the previous frame: a blob that continues it is
        another animal (:meth:`Leftovers.foreign`).

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
    for i, o in enumerate(objs):
        t = tracks[o]
        cx, cy = predicted_centre(t)
        g = gate(t, max_jump)
        d = np.hypot(cents[:, 0] - cx, cents[:, 1] - cy)
        r = a / max(t.ref_area, 1.0)
        ok = (d <= g) & (r >= 0.4) & (r <= 2.5)
        if left is not None:
            ok &= ~left.foreign(free, t, blobs, labels)
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

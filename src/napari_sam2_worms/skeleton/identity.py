"""The "identity suspect" flag: two animals touched, then parted with swapped identities.

When two tracked animals touch (their masks are 8-adjacent, or one of them is lost
while they meet) and then part again, a tracker may hand each identity to the other
animal. :func:`identity_suspects` compares, for each such *contact episode*, how well
each object's body (length, mean width, area) and motion (where its centroid was going)
before the contact matches each object after it. When the crossed assignment fits
better than the kept one by a clear margin, the episode is suspect and
:func:`mark_identity_suspects` flags the first frame after the contact, for both
objects, with the reason :data:`IDENTITY_SUSPECT` (the frame is then not ``good``; it
shows in the review list and in every export's ``reason`` column like the other flags).

The fix is :func:`napari_sam2_worms.engine.identity.swap_identities`; after it the
kept assignment fits again and the flag goes away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    from ..tracks import SkeletonTracks

__all__ = ["IDENTITY_SUSPECT", "IdentityEvent", "identity_suspects", "mark_identity_suspects"]

#: The ``reason`` of a frame where two objects may have swapped identities.
IDENTITY_SUSPECT = "identity suspect"

#: Frames compared on each side of a contact (valid frames: present, touching nobody).
WINDOW = 8
#: How far (frames) from the contact the comparison frames may be looked for.
HORIZON = 30
#: Frames apart (both present, not touching) that still belong to one contact episode.
MAX_GAP = 2
#: Smallest spread of a log feature (a body measured the same on every frame still
#: varies ~5 % with its pose and pixels).
SPREAD_FLOOR = 0.05
#: Most a single feature adds to a cost (one unreliable measure cannot decide alone).
FEATURE_CAP = 4.0
#: Weight of the motion term (predicted centroid miss, in body lengths, capped at 1).
MOTION_WEIGHT = 1.0
#: Suspect when the crossed assignment costs less than the kept one by this much ...
MARGIN = 1.0
#: ... and less than this fraction of it.
RATIO = 0.6

_SHAPE = ("length", "mean_width", "area")
_EIGHT = np.ones((3, 3), bool)


@dataclass(frozen=True)
class IdentityEvent:
    """One contact episode of objects ``a`` and ``b`` and its verdict.

    Attributes
    ----------
    a, b : the two object ids (``a < b``).
    start, stop : video frames of the first and last frame of the contact.
    frame : the first frame after the contact (where the flag goes).
    cost_keep, cost_swap : mismatch of the kept and of the crossed assignment.
    suspect : True when the crossed assignment fits clearly better (by :data:`MARGIN`
        and :data:`RATIO`).
    """

    a: int
    b: int
    start: int
    stop: int
    frame: int
    cost_keep: float
    cost_swap: float
    suspect: bool


def _contacts(labels: np.ndarray, tracks: SkeletonTracks) -> dict[tuple[int, int], np.ndarray]:
    """Per pair of objects, a (T,) bool: their masks are 8-adjacent on that row.

    Only rows where at least two objects carry the ``touching`` reason are searched.
    """
    ids = [int(o) for o in tracks.object_ids]
    col = {o: k for k, o in enumerate(ids)}
    t_n = tracks.n_frames
    reason = np.asarray(tracks.reason, dtype=object)
    out: dict[tuple[int, int], np.ndarray] = {}
    rows = np.flatnonzero((reason == "touching").sum(axis=1) >= 2)
    for t in rows:
        frame = np.asarray(labels[int(tracks.frames[t])])
        touching = [ids[k] for k in np.flatnonzero(reason[t] == "touching")]
        slices = ndimage.find_objects(frame)
        for a in touching:
            if a > len(slices) or slices[a - 1] is None:
                continue
            ys, xs = slices[a - 1]
            y0, x0 = max(ys.start - 1, 0), max(xs.start - 1, 0)
            crop = frame[y0 : ys.stop + 1, x0 : xs.stop + 1]
            own = crop == a
            ring = ndimage.binary_dilation(own, _EIGHT) & ~own
            for b in np.unique(crop[ring]):
                b = int(b)
                if b > a and b in col:
                    out.setdefault((a, b), np.zeros(t_n, bool))[t] = True
    return out


def _episodes(contact: np.ndarray, present: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) rows of each contact episode.

    An episode runs from a contact row while the two touch, or one of them is lost
    (merged into the other), or they are apart for at most :data:`MAX_GAP` rows.
    """
    out: list[tuple[int, int]] = []
    t_n = len(contact)
    t = 0
    while t < t_n:
        if not contact[t]:
            t += 1
            continue
        start = last = t
        t += 1
        while t < t_n:
            if contact[t] or not present[t]:
                last = t if contact[t] else last
                t += 1
                continue
            ahead = contact[t : t + MAX_GAP + 1]
            if ahead.any():
                t += int(np.argmax(ahead))
                continue
            break
        # a lost object right after the last contact still belongs to the episode
        while last + 1 < t_n and not present[last + 1]:
            last += 1
        out.append((start, last))
    return out


def _window(valid: np.ndarray, first: int, step: int) -> np.ndarray:
    """Pick up to :data:`WINDOW` valid rows from ``first`` going ``step`` (+1 / -1).

    Within :data:`HORIZON` rows; nearest first.
    """
    rows: list[int] = []
    t = first
    while 0 <= t < len(valid) and abs(t - first) < HORIZON and len(rows) < WINDOW:
        if valid[t]:
            rows.append(t)
        t += step
    return np.asarray(rows, int)


def _best_window(strict: np.ndarray, loose: np.ndarray, k: int, first: int, step: int):
    rows = _window(strict[:, k], first, step)
    return rows if len(rows) >= 2 else _window(loose[:, k], first, step)


def _summary(tracks: SkeletonTracks, k: int, rows: np.ndarray) -> dict:
    """Log shape features (per frame and median) and centroids of object column ``k``."""
    f = tracks.features
    out: dict = {}
    for name in _SHAPE:
        v = np.asarray(f[name][rows, k], float)
        logs = np.log(v[v > 0])
        out[name] = logs
        out[name + "_median"] = float(np.median(logs)) if len(logs) else np.nan
    out["length_px"] = float(np.nanmedian(f["length"][rows, k]))
    xy = np.stack([f["centroid_x"][rows, k], f["centroid_y"][rows, k]], 1).astype(float)
    out["rows"], out["xy"] = rows, xy
    return out


def _motion_miss(before: dict, after: dict, length: float) -> float:
    """How far (in body lengths, capped at 1) ``after`` is from where ``before`` was heading."""
    rows_b, xy_b = before["rows"], before["xy"]
    last, pos = int(rows_b[0]), xy_b[0]  # nearest to the contact
    if len(rows_b) >= 2:
        span = float(rows_b[0] - rows_b[-1])
        vel = (xy_b[0] - xy_b[-1]) / span if span else np.zeros(2)
    else:
        vel = np.zeros(2)
    rows_a, xy_a = after["rows"], after["xy"]
    pred = pos[None, :] + vel[None, :] * (rows_a - last)[:, None].astype(float)
    miss = float(np.nanmedian(np.hypot(*(xy_a - pred).T)))
    if not np.isfinite(miss) or not length > 0:
        return 0.0
    return min(miss / length, 1.0)


def _cost(before: dict, after: dict) -> float:
    """Score the mismatch of ``before`` continuing as ``after``.

    Per shape feature, the change of its median (log) in units of its own frame-to-frame
    spread (at least :data:`SPREAD_FLOOR`, at most :data:`FEATURE_CAP` a feature), plus
    the motion term.
    """
    shape = 0.0
    for name in _SHAPE:
        x, y = before[name + "_median"], after[name + "_median"]
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        pooled = np.concatenate([before[name] - x, after[name] - y])
        spread = max(float(np.std(pooled)) if len(pooled) > 2 else 0.0, SPREAD_FLOOR)
        shape += min(abs(y - x) / spread, FEATURE_CAP)
    return shape + MOTION_WEIGHT * _motion_miss(before, after, before["length_px"])


def identity_suspects(tracks: SkeletonTracks, labels: np.ndarray) -> list[IdentityEvent]:
    """Every contact episode of two objects, with the kept and crossed assignment costs.

    Parameters
    ----------
    tracks : skeleton tracks with features (``length``, ``mean_width``, ``area``,
        ``centroid_x``/``_y``) and reasons, as
        :func:`~napari_sam2_worms.skeleton.skeletonize_labels` makes them.
    labels : the label stack the tracks were made from (indexed by ``tracks.frames``).

    Returns
    -------
    list of IdentityEvent, ordered by frame; ``suspect`` tells which to flag.
    """
    ids = [int(o) for o in tracks.object_ids]
    if len(ids) < 2 or tracks.n_frames < 3:
        return []
    col = {o: k for k, o in enumerate(ids)}
    reason = np.asarray(tracks.reason, dtype=object)
    present = ~np.isin(reason, ("missing",)) & np.isfinite(tracks.features["area"])
    # comparison frames: the body alone (not touching, not coiled, not cut, not tiny);
    # where too few, also coiled or cut bodies (e.g. flies and mice are mostly "coiled")
    finite = np.ones(reason.shape, bool)
    for name in _SHAPE:
        finite &= np.isfinite(tracks.features[name])
    strict = finite & ((reason == "") | (reason == IDENTITY_SUSPECT))
    loose = finite & np.isin(reason, ("", IDENTITY_SUSPECT, "coiled", "border"))
    events = []
    for (a, b), contact in sorted(_contacts(labels, tracks).items()):
        ka, kb = col[a], col[b]
        both = present[:, ka] & present[:, kb]
        for start, stop in _episodes(contact, both):
            before = [_best_window(strict, loose, k, start - 1, -1) for k in (ka, kb)]
            after = [_best_window(strict, loose, k, stop + 1, +1) for k in (ka, kb)]
            if min(len(w) for w in before + after) < 2:
                continue  # not enough to compare (video end, long merge...)
            sb = [_summary(tracks, k, w) for k, w in zip((ka, kb), before)]
            sa = [_summary(tracks, k, w) for k, w in zip((ka, kb), after)]
            keep = _cost(sb[0], sa[0]) + _cost(sb[1], sa[1])
            swap = _cost(sb[0], sa[1]) + _cost(sb[1], sa[0])
            after_both = np.flatnonzero(both[stop + 1 :])
            first = stop + 1 + int(after_both[0]) if len(after_both) else stop + 1
            events.append(
                IdentityEvent(
                    a,
                    b,
                    int(tracks.frames[start]),
                    int(tracks.frames[stop]),
                    int(tracks.frames[min(first, tracks.n_frames - 1)]),
                    float(keep),
                    float(swap),
                    bool(swap + MARGIN < keep and swap < RATIO * keep),
                )
            )
    events.sort(key=lambda e: (e.frame, e.a, e.b))
    return events


def mark_identity_suspects(tracks: SkeletonTracks, labels: np.ndarray) -> list[IdentityEvent]:
    """Flag suspect episodes in ``tracks`` (in place) and return the suspect events.

    The first frame after the contact, both objects, gets the reason
    :data:`IDENTITY_SUSPECT` and is not ``good``.
    """
    suspects = [e for e in identity_suspects(tracks, labels) if e.suspect]
    for e in suspects:
        rows = np.flatnonzero(tracks.frames == e.frame)
        for oid in (e.a, e.b):
            k = tracks.index_of(oid)
            for t in rows:
                if tracks.reason[t, k] not in ("missing", "small"):
                    tracks.reason[t, k] = IDENTITY_SUSPECT
                    tracks.good[t, k] = False
    return suspects

"""Head/tail orientation: consistent between frames, head chosen from movement.

1. Frame to frame: each centerline is reversed when its reverse is closer to the previous
   frame's (shape compared after removing the translation, so it works on moving crops).
2. Per track segment (runs of frames with a centerline, broken by gaps longer than
   ``max_gap`` frames): worms crawl forward most of the time, so the head is the end
   towards which the midbody moves. The score is the sum over the segment of
   ``v · (head_part - midbody)``; a negative score flips the whole segment. When the
   worm hardly moves (score below a noise floor) and images were given, the optional
   intensity cue decides (see :func:`intensity_cue`).
3. User flips (``tracks.flipped``) are applied last, so they survive re-orientation.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..tracks import SkeletonTracks

__all__ = ["consistent_orientation", "flip_head_tail", "movement_score", "orient_tracks"]

log = logging.getLogger(__name__)


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    d = a - b  # the mean of the point distances (as np.mean, without its overhead)
    return float(np.hypot(d[:, 0], d[:, 1]).sum() / len(d))


def consistent_orientation(points: np.ndarray, max_gap: int = 5) -> np.ndarray:
    """Reverse centerlines so that each agrees with the previous one.

    Parameters
    ----------
    points : (T, N, 2) one object's centerlines (NaN rows where absent); modified in place.
    max_gap : frames without a centerline after which the chain restarts.

    Returns
    -------
    (T,) int segment index of each frame (-1 where absent).

    Notes
    -----
    Frame ``t`` is reversed when its reverse is strictly closer to frame ``t - 1`` as
    oriented. Reversing both lines keeps their distance, so that is decided from the
    lines as given, all frames at once: ``t`` takes ``t - 1``'s orientation, flipped
    when the given lines disagree; a tie (or a new segment) keeps ``t`` as given.
    """
    t_n = points.shape[0]
    seg = np.full(t_n, -1, int)
    idx = np.flatnonzero(np.isfinite(points).all(axis=(1, 2)))
    if len(idx) == 0:
        return seg
    new_seg = np.ones(len(idx), bool)
    new_seg[1:] = np.diff(idx) > max_gap
    seg[idx] = np.cumsum(new_seg) - 1
    if len(idx) < 2:
        return seg
    pts = points[idx].astype(float)
    centred = pts - pts.mean(axis=1, keepdims=True)
    prev, cur = centred[:-1], centred[1:]
    same = np.hypot(*np.moveaxis(cur - prev, -1, 0)).mean(axis=1)
    rev = np.hypot(*np.moveaxis(cur[:, ::-1] - prev, -1, 0)).mean(axis=1)
    flip = np.zeros(len(idx), bool)
    for i in range(1, len(idx)):  # a parity chain: cheap in Python
        if new_seg[i]:
            continue
        flip[i] = rev[i - 1] < same[i - 1] if not flip[i - 1] else same[i - 1] < rev[i - 1]
    todo = idx[flip]
    points[todo] = points[todo][:, ::-1]
    return seg


def movement_score(points: np.ndarray, frames: np.ndarray | None = None) -> float:
    """Sum midbody velocity · (head part - midbody) over consecutive frames, in px² a frame.

    Positive: the worm moves towards point 0.
    """
    n = points.shape[1]
    mid = points[:, n // 2]
    head = points[:, : max(n // 5, 1)].mean(axis=1)
    ok = np.isfinite(mid).all(axis=1) & np.isfinite(head).all(axis=1)
    idx = np.flatnonzero(ok)
    if len(idx) < 2:
        return 0.0
    fr = np.asarray(frames if frames is not None else np.arange(len(points)))[idx]
    dt = np.diff(fr).astype(float)
    close = dt <= 5
    v = np.diff(mid[idx], axis=0) / dt[:, None]
    axis = head[idx][:-1] + head[idx][1:] - mid[idx][:-1] - mid[idx][1:]
    return float(((v * axis).sum(axis=1))[close].sum() / 2.0)


def intensity_cue(points: np.ndarray, image: np.ndarray) -> float:
    """Score the image cue: positive when point 0's end is darker/more textured (optional).

    The C. elegans head (pharynx) is usually more contrasted than the tail: compare the
    local standard deviation of the image along the first and last fifths of the body.
    """
    from scipy import ndimage

    n = len(points)
    k = max(n // 5, 2)
    img = image.astype(np.float32)
    if img.ndim == 3:
        img = img.mean(axis=2)

    def spread(p: np.ndarray) -> float:
        v = ndimage.map_coordinates(img, [p[:, 1], p[:, 0]], order=1, mode="nearest")
        return float(np.std(v))

    return spread(points[:k]) - spread(points[-k:])


#: Reasons whose shapes are too ambiguous to decide the head from movement.
AMBIGUOUS = ("coiled", "touching")


def _orient_object(
    pts: np.ndarray, reliable: np.ndarray, frames: np.ndarray, images, max_gap: int
) -> None:
    """Orient one object's (T, N, 2) centerlines in place (see :func:`orient_tracks`)."""
    have = np.isfinite(pts).all(axis=(1, 2))
    consistent_orientation(pts, max_gap=max_gap)
    runs = _reliable_runs(have & reliable, frames, max_gap)
    decided = _decide_runs(pts, runs, frames, images)
    _follow_decided(pts, have, decided, frames, max_gap)


def _reliable_runs(usable: np.ndarray, frames: np.ndarray, max_gap: int) -> list[np.ndarray]:
    """Split the rows where ``usable`` holds into runs, also at gaps over ``max_gap`` frames."""
    runs: list[np.ndarray] = []
    cur: list[int] = []
    for t in range(len(usable)):
        if usable[t] and (not cur or frames[t] - frames[cur[-1]] <= max_gap):
            cur.append(t)
        elif usable[t]:
            runs.append(np.array(cur))
            cur = [t]
        elif cur:
            runs.append(np.array(cur))
            cur = []
    if cur:
        runs.append(np.array(cur))
    return runs


def _decide_runs(pts: np.ndarray, runs: list[np.ndarray], frames: np.ndarray, images) -> np.ndarray:
    """Point each run's heads where the worm moves (else the image cue); return the decided rows."""
    decided = np.zeros(len(pts), bool)
    for rows in runs:
        score = movement_score(pts[rows], frames[rows])
        length = np.nanmedian(np.hypot(*np.diff(pts[rows], axis=1).transpose(2, 0, 1)).sum(-1))
        # noise floor: ~0.015 body lengths per frame of forward motion on average
        floor = 0.015 * 0.3 * float(length) ** 2 * max(len(rows) - 1, 1)
        if abs(score) < floor and images is not None:
            sub = rows[:: max(len(rows) // 20, 1)]
            cue = float(np.mean([intensity_cue(pts[t], images[t]) for t in sub]))
            if cue != 0:
                score, floor = cue, 0.0
        if len(rows) >= 3 and abs(score) >= floor and score != 0:
            if score < 0:
                pts[rows] = pts[rows][:, ::-1]
            decided[rows] = True
    return decided


def _follow_decided(
    pts: np.ndarray, have: np.ndarray, decided: np.ndarray, frames: np.ndarray, max_gap: int
) -> None:
    """Align every undecided row to its nearest decided neighbour in time, in place.

    A forward chain first (within ``max_gap`` frames), then backward for the rows before
    the first decided one.
    """
    prev = None
    last = -(10**9)
    for t in range(len(pts)):
        if not have[t]:
            continue
        if decided[t]:
            prev, last = pts[t], frames[t]
            continue
        if prev is not None and frames[t] - last <= max_gap:
            _align(pts, t, prev)
            prev, last = pts[t], frames[t]
            decided[t] = True
    nxt = None
    for t in range(len(pts) - 1, -1, -1):
        if not have[t]:
            continue
        if decided[t]:
            nxt = pts[t]
        elif nxt is not None:
            _align(pts, t, nxt)
            nxt = pts[t]


def _align(pts: np.ndarray, t: int, ref: np.ndarray) -> None:
    p = pts[t]
    pc, qc = p - p.mean(axis=0), ref - ref.mean(axis=0)
    if _dist(pc[::-1], qc) < _dist(pc, qc):
        pts[t] = p[::-1]


def orient_tracks(
    tracks: SkeletonTracks, images: np.ndarray | None = None, max_gap: int = 5
) -> None:
    """Orient every object's centerlines in place.

    Consecutive frames agree, the head (point 0) is the end the worm moves towards,
    user flips are re-applied.

    Head choice uses runs of reliable frames (not coiled or touching); ambiguous frames
    and runs where the worm hardly moves follow their neighbours in time.

    Parameters
    ----------
    tracks : the tracks to orient (points and widths are reversed in place).
    images : optional (T, H, W) frames (same rows as ``tracks``) for the intensity cue,
        used only for runs where movement does not decide.
    max_gap : frames without a centerline after which the chain restarts.
    """
    flipped = tracks.flipped if tracks.flipped is not None else np.zeros(tracks.good.shape, bool)
    # undo user flips first, so orientation is computed on the raw shapes
    _reverse_where(tracks, flipped)
    frames = np.asarray(tracks.frames)
    for k in range(tracks.n_objects):
        pts = tracks.points[:, k].astype(float)
        before = pts.copy()
        reliable = ~np.isin(np.asarray(tracks.reason[:, k], dtype=object), AMBIGUOUS)
        _orient_object(pts, reliable, frames, images, max_gap)
        rev = np.isfinite(pts).all(axis=(1, 2)) & (
            np.abs(pts[:, 0] - before[:, 0]).sum(axis=1) > 1e-6
        )
        tracks.points[:, k] = pts.astype(np.float32)
        tracks.widths[rev, k] = tracks.widths[rev, k, ::-1]
    _reverse_where(tracks, flipped)
    tracks.flipped = flipped


def _reverse_where(tracks: SkeletonTracks, where: np.ndarray) -> None:
    t, k = np.nonzero(where)
    tracks.points[t, k] = tracks.points[t, k, ::-1]
    tracks.widths[t, k] = tracks.widths[t, k, ::-1]


def flip_head_tail(tracks: SkeletonTracks, object_id: int, start: int, stop: int) -> None:
    """Swap head and tail of ``object_id`` on frames ``start``..``stop``, in place.

    The range is inclusive, in video frame numbers (``tracks.frames`` values); toggles
    ``tracks.flipped`` there and recomputes the features.
    """
    if stop < start:
        raise ValueError(f"flip range is empty: start {start} > stop {stop}")
    k = tracks.index_of(object_id)
    rows = np.flatnonzero((tracks.frames >= start) & (tracks.frames <= stop))
    if tracks.flipped is None:
        tracks.flipped = np.zeros(tracks.good.shape, bool)
    tracks.points[rows, k] = tracks.points[rows, k, ::-1]
    tracks.widths[rows, k] = tracks.widths[rows, k, ::-1]
    tracks.flipped[rows, k] = ~tracks.flipped[rows, k]
    from .features import compute_features

    compute_features(tracks)

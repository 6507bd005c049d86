"""Label stacks -> :class:`SkeletonTracks` (all objects, all frames) with flags.

Flags (``reason``), first match wins: ``"missing"`` (no pixels), ``"small"`` (too few
pixels / no skeleton), ``"touching"`` (the mask is 8-adjacent to another label),
``"coiled"`` (self-touching / loop: the centerline is fitted or approximate),
``"border"`` (the mask touches the image border, so the worm may be cut), ``""`` (good).
After that, ``"identity suspect"`` marks the first frame after two objects touched
and parted when their bodies and motion fit better the other way round
(:mod:`.identity`).
Only ``""`` frames are ``good``; all frames except ``missing``/``small`` get points.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from ..tracks import SkeletonTracks
from .centerline import MaskSkeleton, skeletonize_mask
from .features import compute_features
from .identity import mark_identity_suspects
from .orientation import orient_tracks

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = ["skeletonize_frame", "skeletonize_labels"]

log = logging.getLogger(__name__)

#: fewer (frames x objects) than this are skeletonized in this process
PARALLEL_MIN_MASKS = 2000


def _object_slices(frame: np.ndarray) -> dict[int, tuple[slice, slice]]:
    objs = ndimage.find_objects(frame)
    return {i + 1: s for i, s in enumerate(objs) if s is not None}


#: up to this many objects, :func:`object_boxes` compares per object instead of one
#: ``find_objects`` pass (640x480: ~0.05-0.1 ms an object vs ~0.35 ms for the pass)
FEW_OBJECTS = 3


def object_boxes(frame: np.ndarray, ids) -> dict[int, tuple[slice, slice]]:
    """Find the bounding slices of the objects ``ids`` present in ``frame``.

    The same as :func:`_object_slices` restricted to them, found faster for a few objects.
    """
    ids = sorted({int(o) for o in ids})
    if len(ids) > FEW_OBJECTS or frame.ndim != 2:
        wanted = set(ids)
        return {o: sl for o, sl in _object_slices(frame).items() if o in wanted}
    out = {}
    for oid in ids:
        mask = frame == oid
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            continue
        r0, r1 = int(rows[0]), int(rows[-1]) + 1
        cols = np.flatnonzero(mask[r0:r1].any(axis=0))
        out[oid] = (slice(r0, r1), slice(int(cols[0]), int(cols[-1]) + 1))
    return out


def _crop(frame: np.ndarray, sl: tuple[slice, slice]) -> tuple[np.ndarray, int, int, bool]:
    """Cut an object's bounding box plus a 1-pixel margin: (labels crop, row0, col0, border)."""
    h, w = frame.shape
    r0, r1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, h)
    c0, c1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, w)
    border = sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == h or sl[1].stop == w
    return frame[r0:r1, c0:c1], r0, c0, border


def _one(
    frame: np.ndarray, oid: int, sl: tuple[slice, slice] | None, n_points: int, prev
) -> tuple[MaskSkeleton, bool, bool]:
    """Skeleton of object ``oid`` + (touching another label, touching the border)."""
    if sl is None:
        return skeletonize_mask(np.zeros((1, 1), bool), n_points), False, False
    sub, r0, c0, border = _crop(frame, sl)
    sk, touching = _one_crop(sub, oid, r0, c0, n_points, prev)
    return sk, touching, border


def _one_crop(
    sub: np.ndarray, oid: int, r0: int, c0: int, n_points: int, prev
) -> tuple[MaskSkeleton, bool]:
    """Skeleton of ``oid`` inside its label crop + whether it touches another label."""
    m = sub == oid
    p = None if prev is None else np.asarray(prev, float) - np.array([c0, r0], float)
    sk = skeletonize_mask(m, n_points, prev=p)
    if np.isfinite(sk.points).all():
        sk.points = (sk.points + np.array([c0, r0], np.float32)).astype(np.float32)
    sk.centroid = (sk.centroid[0] + c0, sk.centroid[1] + r0)
    other = (sub != 0) & ~m
    touching = False
    if other.any():
        grown = ndimage.binary_dilation(m, structure=np.ones((3, 3), bool))
        touching = bool((grown & other).any())
    return sk, touching


def skeleton_item(
    sub: np.ndarray, oid: int, r0: int, c0: int, border: bool, n_points: int, prev
) -> tuple:
    """Skeletonize one object on one frame from its label crop, as the stack loop keeps it.

    Returns ``(reason, points or None, widths, area, cx, cy)``.
    """
    sk, touching = _one_crop(sub, oid, r0, c0, n_points, prev)
    reason = _reason(sk, touching, border)
    ok = bool(np.isfinite(sk.points).all())
    if sk.reason == "missing":
        return reason, None, sk.widths, np.nan, np.nan, np.nan
    return reason, sk.points if ok else None, sk.widths, sk.area, *sk.centroid


def prev_key(prev) -> bytes | None:
    """Hash the previous centerline's part of an :func:`item_key`."""
    import hashlib

    if prev is None:
        return None
    return hashlib.blake2b(np.asarray(prev, np.float32).tobytes(), digest_size=16).digest()


def item_key(sub: np.ndarray, r0: int, c0: int, border: bool, prev, n_points: int) -> tuple:
    """Hash everything :func:`skeleton_item` depends on: equal keys, equal items.

    The stack loop's fast path compares fields 6 and 7: previous centerline, points.
    """
    import hashlib

    crop = hashlib.blake2b(np.ascontiguousarray(sub).tobytes(), digest_size=16).digest()
    return (
        crop,
        sub.shape,
        str(sub.dtype),
        int(r0),
        int(c0),
        bool(border),
        prev_key(prev),
        int(n_points),
    )


#: per lane count: two rows of fixed pseudo-random odd 64-bit weights (frame_signature)
_SIGNATURE_WEIGHTS: dict[int, np.ndarray] = {}


def _signature_weights(n: int) -> np.ndarray:
    w = _SIGNATURE_WEIGHTS.get(n)
    if w is None:  # the same in every process: a fixed seed
        rng = np.random.default_rng(0x5A3E2)
        w = rng.integers(0, 2**63, (2, n), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        if len(_SIGNATURE_WEIGHTS) >= 4:  # frame sizes seen: keep the last few
            _SIGNATURE_WEIGHTS.pop(next(iter(_SIGNATURE_WEIGHTS)))
        _SIGNATURE_WEIGHTS[n] = w
    return w


def frame_signature(frame: np.ndarray) -> tuple:
    """Compute a label frame's identity: shape, type and two 64-bit hashes of its bytes.

    The bytes are read as 32-bit lanes, each widened to 64 bits; a hash is the sum,
    modulo 2**64, of the lanes times fixed random odd weights, one per position. Any
    change differs from the original by less than 2**32 in each lane, so it moves at
    least the top 32 bits of each hash: a change goes unseen with probability about
    2**-32 per hash, 2**-64 for both (as the CRC-32 + Adler-32 pair this replaces).
    A block of labels moved elsewhere changes them too (the weights depend on the
    position). Numpy computes it (integer dot products, which wrap modulo 2**64 and
    make no temporary) at memory speed without holding the interpreter lock: 0.16 ms
    for a 640x480 uint16 frame, faster than CRC-32 + Adler-32 and ~5x faster than
    finding the frame's objects.
    """
    data = np.ascontiguousarray(frame).reshape(-1).view(np.uint8)
    n = data.size // 4
    lanes = data[: 4 * n].view(np.uint32).astype(np.uint64)
    w = _signature_weights(n)
    h1, h2 = int(np.dot(lanes, w[0])), int(np.dot(lanes, w[1]))
    return frame.shape, np.dtype(frame.dtype).str, h1, h2, data[4 * n :].tobytes()


class StreamedSkeletons(dict):
    """``{(frame, object): (item_key, skeleton_item)}`` made while tracking.

    It also holds what lets the stack loop check a whole frame at once: ``frames[t]`` is the
    :func:`frame_signature` of the label frame the items of ``t`` were made from and
    its objects' bounding slices, for the objects ``ids``. Where the stack's frame
    has that signature, its objects need not be searched again.
    """

    def __init__(self, ids=()) -> None:
        super().__init__()
        self.ids: frozenset[int] = frozenset(int(o) for o in ids)
        self.frames: dict[int, tuple[tuple, dict[int, tuple[slice, slice]]]] = {}
        #: per frame, the objects its check covers where not :attr:`ids` (merged caches)
        self.frame_ids: dict[int, frozenset[int]] = {}

    def ids_for(self, t: int) -> frozenset[int]:
        """Return the objects whose boxes ``frames[t]`` holds (absent ones are absent there)."""
        return self.frame_ids.get(t, self.ids)


def merge_streamed(older: Mapping, newer: Mapping) -> StreamedSkeletons:
    """Merge two caches: ``older``'s entries on frames ``newer`` lacks, and all of ``newer``'s.

    Item entries stay valid wherever their keys still match (the stack loop checks
    them), so results of an earlier propagation are kept for the frames a later one
    did not reach. A frame ``newer`` touched takes nothing from ``older``: the stack
    loop's whole-frame check trusts that a frame's items and its signature come from
    the same stream. Each frame check keeps the objects its stream followed.
    """
    new_frames = getattr(newer, "frames", {})
    touched = {t for t, _ in newer} | set(new_frames)
    out = StreamedSkeletons(getattr(newer, "ids", getattr(older, "ids", ())))
    out.update((key, v) for key, v in older.items() if key[0] not in touched)
    out.update(newer)
    for cache in (older, newer):
        if not isinstance(cache, StreamedSkeletons):
            continue  # a plain mapping of items: no frame checks
        for t, v in cache.frames.items():
            if cache is newer or t not in touched:
                out.frames[t] = v
                out.frame_ids[t] = cache.ids_for(t)
    return out


#: most threads :func:`_signatures` uses (the hashes release the interpreter lock)
SIGNATURE_THREADS = 8


def _signatures(labels: np.ndarray, frames: list[int]) -> dict[int, tuple]:
    """:func:`frame_signature` of ``frames``, in threads where the host has cores.

    The end of a tracked run hashes every frame once: 200 frames of 640x480 took 108 ms
    in one thread on the H100's host, 16 ms in 8 (``benchmarks/skeleton_tail_bench.py``).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    threads = min(SIGNATURE_THREADS, cores, len(frames) // 8)
    if threads < 2:
        return {t: frame_signature(labels[t]) for t in frames}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads, thread_name_prefix="signatures") as pool:
        return dict(zip(frames, pool.map(lambda t: frame_signature(labels[t]), frames)))


class PrevChain:
    """The previous centerline each object passes on to its next frame.

    As the stack loop keeps it: the last finite centerline, if at most 2 frames back.
    """

    def __init__(self) -> None:
        self.points: dict[int, np.ndarray] = {}
        self.frame: dict[int, int] = {}

    def get(self, oid: int, t: int) -> np.ndarray | None:
        return self.points.get(oid) if self.frame.get(oid, -99) >= t - 2 else None

    def update(self, oid: int, t: int, points: np.ndarray | None) -> None:
        if points is not None:
            self.points[oid], self.frame[oid] = points, int(t)


def _object_track(
    oid: int, items: list[tuple[int, np.ndarray, int, int, bool]], n_points: int
) -> list[tuple]:
    """One object over its frames (in order), as the serial loop does it.

    ``items``: (frame, labels crop, row0, col0, border) where the object is present.
    Returns ``(frame, *skeleton_item)`` per item. Runs in a worker process.
    """
    out = []
    chain = PrevChain()
    for t, sub, r0, c0, border in items:
        item = skeleton_item(sub, oid, r0, c0, border, n_points, chain.get(oid, t))
        chain.update(oid, t, item[1])
        out.append((t, *item))
    return out


def _reason(sk: MaskSkeleton, touching: bool, border: bool) -> str:
    if sk.reason in ("missing", "small"):
        return sk.reason
    if touching:
        return "touching"
    if sk.reason:
        return sk.reason
    if border:
        return "border"
    return ""


def skeletonize_frame(
    label_frame: np.ndarray,
    object_ids: Sequence[int],
    n_points: int = 49,
    prev: dict[int, np.ndarray] | None = None,
) -> dict[int, MaskSkeleton]:
    """Skeletons of the objects of one label frame (for a quick display).

    ``prev`` maps object id -> previous (n_points, 2) centerline (orients and helps coiled
    shapes). ``reason``/``good`` of each result include the touching and border flags.
    """
    frame = np.asarray(label_frame)
    if frame.ndim != 2:
        raise ValueError(f"skeletonize_frame needs a 2-D label frame, got shape {frame.shape}")
    slices = _object_slices(frame) if frame.any() else {}
    out = {}
    for oid in object_ids:
        p = None if prev is None else prev.get(int(oid))
        sk, touching, border = _one(frame, int(oid), slices.get(int(oid)), n_points, p)
        sk.reason = _reason(sk, touching, border)
        sk.good = sk.reason == ""
        out[int(oid)] = sk
    return out


def skeletonize_labels(
    labels: np.ndarray,
    object_ids: Sequence[int] | None = None,
    n_points: int = 49,
    *,
    fps: float = 1.0,
    pixel_size: float | None = None,
    images: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    frames: Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 0,
    cache: Mapping[tuple[int, int], tuple] | None = None,
) -> SkeletonTracks:
    """Centerlines, flags and features of every object on every frame of a label stack.

    Parameters
    ----------
    labels : (T, H, W) int label stack (0 = background).
    object_ids : ids to skeletonize (default: every id present, sorted).
    n_points : points per centerline.
    fps : frames per second (speeds are per second).
    pixel_size : micrometres per pixel (stored; exporters add µm columns).
    images : optional (T, H, W) frames: intensity cue for the head where movement
        does not decide.
    names : object names (default ``worm<id>``).
    frames : optional subset of frame indices to process; the others stay ``missing``.
    progress : optional ``progress(done, total)`` callback.
    workers : worker processes (0 or 1: this process). Objects are split between
        processes, each follows its objects through time exactly as the serial loop
        does, so the result does not depend on the number of workers. Used only for
        at least :data:`PARALLEL_MIN_MASKS` masks (starting processes costs ~1 s).
    cache : ``{(frame, object): (item_key, skeleton_item)}`` computed earlier (e.g. by a
        :class:`~napari_sam2_worms.skeleton.stream.SkeletonStream` while tracking); an
        entry is used only where its key equals that of the crop and previous
        centerline met here, so the result is the same with or without it. With a
        cache, objects are processed in this process.

    Returns
    -------
    SkeletonTracks
        Oriented (head first), with ``good``/``reason`` and features filled.
    """
    labels = np.asarray(labels)
    ids = _checked_ids(labels, object_ids, names, fps)
    t_n = labels.shape[0]
    tracks = SkeletonTracks.empty(
        t_n,
        ids,
        n_points,
        names=list(names) if names is not None else None,
        fps=fps,
        pixel_size=pixel_size,
    )
    todo = np.arange(t_n) if frames is None else np.unique(np.asarray(frames, int))
    if len(todo) and (todo.min() < 0 or todo.max() >= t_n):
        raise ValueError(f"frames must be within 0..{t_n - 1}")
    area = np.full((t_n, len(ids)), np.nan, np.float32)
    cx = np.full((t_n, len(ids)), np.nan, np.float32)
    cy = np.full((t_n, len(ids)), np.nan, np.float32)
    if (
        cache is None
        and workers > 1
        and len(ids) > 1
        and len(todo) * len(ids) >= PARALLEL_MIN_MASKS
    ):
        _parallel(labels, ids, todo, n_points, workers, tracks, area, cx, cy, progress)
        todo = todo[:0]
    chain = PrevChain()
    reused = 0
    known: dict[int, tuple] = {}
    if isinstance(cache, StreamedSkeletons):
        # frames checked for every object asked for (others: search them)
        want = set(ids)
        known = {t: v for t, v in cache.frames.items() if want <= cache.ids_for(t)}
    sigs = _signatures(labels, [int(t) for t in todo if int(t) in known]) if known else {}
    for done, t in enumerate(todo, 1):
        frame = labels[t]
        entry = known.get(int(t))
        same = entry is not None and sigs.get(int(t)) == entry[0]  # the frame streamed
        slices = entry[1] if entry is not None and same else _found_slices(frame)
        for k, oid in enumerate(ids):
            sl = slices.get(oid)
            if sl is None:
                continue  # missing: the defaults
            p = chain.get(oid, t)
            item = _cached_item(cache, int(t), oid, frame, sl, same, p, n_points)
            reused += item is not None
            if item is None:
                sub, r0, c0, border = _crop(frame, sl)
                item = skeleton_item(sub, oid, r0, c0, border, n_points, p)
            chain.update(oid, t, item[1])
            _store(tracks, (area, cx, cy), t, k, item)
        if progress is not None:
            progress(done, len(todo))
    if cache is not None:
        log.info("skeletons: %d of the (frame, object) results reused", reused)
    tracks.features["area"] = area
    tracks.features["centroid_x"] = cx
    tracks.features["centroid_y"] = cy
    orient_tracks(tracks, images=images)
    compute_features(tracks)
    mark_identity_suspects(tracks, labels)
    return tracks


def _checked_ids(
    labels: np.ndarray,
    object_ids: Sequence[int] | None,
    names: Sequence[str] | None,
    fps: float,
) -> list[int]:
    """Check the arguments of :func:`skeletonize_labels`; return the object ids to follow."""
    if labels.ndim != 3:
        raise ValueError(
            f"skeletonize_labels needs a (T, H, W) label stack, got shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError("the label stack must be integer (0 = background, ids > 0)")
    if object_ids is None:
        if labels.dtype.kind == "u" and labels.dtype.itemsize <= 2:
            present = np.flatnonzero(np.bincount(labels.ravel()))
        else:
            present = np.unique(labels)
        object_ids = [int(i) for i in present if i != 0]
    ids = [int(i) for i in object_ids]
    if names is not None and len(names) != len(ids):
        raise ValueError(f"got {len(names)} names for {len(ids)} objects")
    if fps is None or not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return ids


def _found_slices(frame: np.ndarray) -> dict:
    """Bounding slices of every object on ``frame`` ({} on an empty frame)."""
    return _object_slices(frame) if frame.any() else {}


def _cached_item(
    cache: Mapping[tuple[int, int], tuple] | None,
    t: int,
    oid: int,
    frame: np.ndarray,
    sl,
    same: bool,
    p: np.ndarray | None,
    n_points: int,
) -> tuple | None:
    """Return the cached item of ``oid`` on frame ``t`` where its key still matches, else None.

    ``same``: the frame is the one the cache saw (its signature matched), so only the
    previous centerline can differ.
    """
    hit = cache.get((t, oid)) if cache is not None else None
    if hit is None:
        return None
    if same:
        ok = hit[0][6] == prev_key(p) and hit[0][7] == n_points
    else:
        sub, r0, c0, border = _crop(frame, sl)
        ok = hit[0] == item_key(sub, r0, c0, border, p, n_points)
    return hit[1] if ok else None


def _store(tracks: SkeletonTracks, columns: tuple, t: int, k: int, item) -> None:
    """Store one (reason, points, widths, area, x, y) result into ``tracks``.

    Also fills the (area, centroid x, centroid y) feature columns.
    """
    reason, pts, widths, a, x, y = item
    tracks.reason[t, k] = reason
    tracks.good[t, k] = reason == ""
    if pts is not None:
        tracks.points[t, k] = pts
        tracks.widths[t, k] = widths
    area, cx, cy = columns
    area[t, k], cx[t, k], cy[t, k] = a, x, y


def _parallel(
    labels: np.ndarray,
    ids: list[int],
    todo: np.ndarray,
    n_points: int,
    workers: int,
    tracks: SkeletonTracks,
    area: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Compute the serial loop's results, objects spread over ``workers`` processes.

    This process finds each frame's objects and cuts their crops (small); workers
    (spawned: safe beside CUDA and Qt threads) skeletonize one object each at a time.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    items: dict[int, list] = {oid: [] for oid in ids}
    for t in todo:
        frame = labels[t]
        if not frame.any():
            continue
        for oid, sl in _object_slices(frame).items():
            if oid in items:
                sub, r0, c0, border = _crop(frame, sl)
                items[oid].append((int(t), sub.copy(), r0, c0, border))
    col = {oid: k for k, oid in enumerate(ids)}
    ctx = multiprocessing.get_context("spawn")
    n_workers = min(int(workers), len(ids))
    done = 0
    with ProcessPoolExecutor(n_workers, mp_context=ctx) as pool:
        futures = {
            pool.submit(_object_track, oid, items[oid], n_points): oid
            for oid in sorted(ids, key=lambda o: -len(items[o]))  # longest first
        }
        for fut, oid in futures.items():
            k = col[oid]
            for t, *item in fut.result():
                _store(tracks, (area, cx, cy), t, k, item)
            done += 1
            if progress is not None:
                progress(done * len(todo) // len(ids), len(todo))
    log.info("skeletonized %d objects x %d frames in %d processes", len(ids), len(todo), n_workers)

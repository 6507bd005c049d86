"""Skeletonize frames in worker processes while they are being tracked.

During a propagation the GPU (or the classic tracker) produces one label frame at a
time; skeletons used to be computed only afterwards. A :class:`SkeletonStream` takes
each frame as it is written (:meth:`SkeletonStream.feed`: one copy into a shared ring)
and worker processes skeletonize them meanwhile, each following its objects through
time as :func:`~napari_sam2_worms.skeleton.skeletonize_labels` does. A session keeps
its workers in a :class:`SkeletonPool`, started before the first propagation. The
results form a cache for ``skeletonize_labels(..., cache=...)``: every entry carries
a key of all it depends on (the label crop, its position, the previous centerline),
and the stack loop uses an entry only where the key is what it meets, so tracks are
the same with or without the stream; the stream only saves time. It pays
for a forward run (frames fed in increasing order, as the stack loop reads them) that
starts after unlabelled frames: :func:`stream_for_run` decides.
"""

from __future__ import annotations

import atexit
import logging
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from .labels import StreamedSkeletons
from .ring import _LIVE_RINGS, RING_BYTES, FrameRing, remove_stale_rings, ring_frames
from .stream_worker import _worker

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger(__name__)

__all__ = [
    "RING_BYTES",
    "STREAM_MIN_FRAMES",
    "FrameRing",
    "SkeletonPool",
    "SkeletonStream",
    "auto_workers",
    "live_pools",
    "release_all",
    "remove_stale_rings",
    "stream_for_run",
]

#: pools of this process, released at exit (see :func:`release_all`)

_LIVE_POOLS: weakref.WeakSet = weakref.WeakSet()


def live_pools() -> set:
    """List the skeleton pools of this process that are not closed."""
    return set(_LIVE_POOLS)


def release_all(keep: Iterable[Any] = ()) -> None:
    """Stop the skeleton pools of this process (but those in ``keep``), delete their rings.

    Rings of no pool are deleted too. The command line calls this on every exit path of
    a command; it also runs at interpreter exit.
    """
    keep = set(keep)
    for pool in list(_LIVE_POOLS):
        if pool in keep:
            continue
        try:
            pool.close()
        except Exception:  # on the way out: release what can be released
            log.debug("closing a skeleton pool failed", exc_info=True)
    kept = {id(p._ring) for p in keep if getattr(p, "_ring", None) is not None}
    for ring in list(_LIVE_RINGS):
        if id(ring) not in kept:
            ring.release()


atexit.register(release_all)


#: videos shorter than this skeletonize after tracking (starting processes costs ~1 s)
STREAM_MIN_FRAMES = 500


def auto_workers(n_frames: int) -> int:
    """Worker processes worth streaming skeletons to for a video of ``n_frames``."""
    import os

    if n_frames < STREAM_MIN_FRAMES:
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class SkeletonPool:
    """Worker processes kept for a session and reused by each :class:`SkeletonStream`.

    Started as soon as a session asks for skeleton workers, so that the processes
    start and import (about a second) while the user clicks, not while the first
    frames are tracked: a stream whose workers are not up yet fills its ring and
    then makes the tracking thread wait.

    Parameters
    ----------
    workers : number of processes.
    """

    def __init__(self, workers: int) -> None:
        import multiprocessing
        import threading

        ctx = multiprocessing.get_context("spawn")  # safe beside CUDA and Qt threads
        self.size = max(1, int(workers))
        self.conns: list[Any] = []
        self.procs: list[Any] = []
        self.epoch = 0
        self.broken = False
        self.closed = False
        self.current: SkeletonStream | None = None
        self._ready: set[int] = set()  # workers that said they are up
        self._ring: FrameRing | None = None
        self._ring_lock = threading.Lock()
        for _ in range(self.size):
            mine, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_worker, args=(theirs,), name="skeleton-worker", daemon=True)
            proc.start()
            theirs.close()
            self.conns.append(mine)
            self.procs.append(proc)
        _LIVE_POOLS.add(self)

    @property
    def usable(self) -> bool:
        """Open, and every worker alive and answering so far."""
        return not (self.closed or self.broken) and all(p.is_alive() for p in self.procs)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until every worker has started and imported what it needs.

        Returns True then, or False after ``timeout`` seconds. For callers that can wait,
        such as benchmarks; a stream never needs it (its ring holds frames until the
        workers are up).
        """
        import time
        from multiprocessing.connection import wait

        end = time.monotonic() + timeout
        while self.current is None and len(self._ready) < self.size and self.usable:
            waiting = [c for i, c in enumerate(self.conns) if i not in self._ready]
            left = end - time.monotonic()
            if left <= 0:
                return False
            ready: list[Any] = wait(waiting, timeout=min(left, 1.0))  # our Connections
            for conn in ready:
                try:
                    conn.recv()  # its "ready", or a late answer to a closed stream
                except (EOFError, OSError):
                    self.broken = True
                    return False
                self._ready.add(self.conns.index(conn))
        return self.usable

    def ring(
        self, shape: tuple[int, ...], dtype: Any, ring_bytes: int = RING_BYTES, *, keep=False
    ) -> FrameRing:
        """Return the ring for frames of this shape and type.

        The last one where it fits, else a new one (allocated now). ``keep``: return the
        pool's ring whatever it holds, if it has one (never replace a ring a stream may be
        writing). Raises OSError where no file can be made.
        """
        size = ring_frames(int(np.prod(shape)) * np.dtype(dtype).itemsize, ring_bytes)
        with self._ring_lock:
            if self._ring is not None and (keep or self._ring.matches(shape, dtype, size)):
                return self._ring
            if self._ring is not None:
                self._ring.release()
                self._ring = None
            if self.closed:
                raise OSError("the skeleton pool is closed")
            self._ring = FrameRing(shape, dtype, size)
            return self._ring

    def prepare(self, shape: tuple[int, ...], dtype: Any, ring_bytes: int = RING_BYTES) -> None:
        """Allocate the ring for frames like these in a background thread.

        The first frames tracked then do not pay for it (a stream asking meanwhile waits).
        """
        import threading

        def make() -> None:
            try:  # a stream that took a ring first keeps it
                self.ring(shape, dtype, ring_bytes, keep=True)
            except OSError as exc:  # the stream will try again and say so
                log.debug("skeleton ring not prepared: %s", exc)

        threading.Thread(target=make, name="skeleton-ring", daemon=True).start()

    def stream(
        self, object_ids: Iterable[int], n_points: int = 49, ring_bytes: int | None = None
    ) -> SkeletonStream:
        """Open a stream on these workers (a previous stream of the pool is closed first)."""
        return SkeletonStream(
            object_ids,
            n_points=n_points,
            ring_bytes=RING_BYTES if ring_bytes is None else ring_bytes,
            pool=self,
        )

    def close(self) -> None:
        """Stop the workers."""
        import contextlib

        if self.closed:
            return
        self.closed = True
        _LIVE_POOLS.discard(self)
        current, self.current = self.current, None
        if current is not None:
            current.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(None)
            # a worker blocked sending results nobody will read now gets an error
            conn.close()
        for proc in self.procs:
            proc.join(timeout=5.0)
            if proc.is_alive():
                proc.terminate()
        with self._ring_lock:
            if self._ring is not None:
                self._ring.release()
                self._ring = None


def stream_for_run(
    labels: np.ndarray,
    object_ids: Iterable[int],
    runs: list[tuple[int, int, bool]],
    workers: int,
    n_points: int = 49,
    pool: SkeletonPool | None = None,
) -> SkeletonStream | None:
    """Open a stream for a propagation made of ``runs`` ((start, stop, reverse) each).

    None where its results could not be reused: not a single forward run, or objects
    labelled on the two frames before it (the stack loop would meet other previous
    centerlines there, and so on down the run). On ``pool``'s workers when given.
    """
    ids = sorted(int(o) for o in object_ids)
    if workers <= 0 or len(runs) != 1 or runs[0][2] or not ids:
        return None
    a = runs[0][0]
    if a > 0 and np.isin(labels[max(a - 2, 0) : a], np.asarray(ids, labels.dtype)).any():
        return None
    if pool is not None:
        return pool.stream(ids, n_points=n_points)
    return SkeletonStream(ids, n_points=n_points, workers=workers)


class SkeletonStream:
    """Worker processes skeletonizing label frames as they arrive.

    The feeding thread (the one tracking, usually CPU-bound launching GPU work) does
    as little as possible per frame: one copy of the label frame into a ring of frames
    in a shared temporary file (memory-mapped, in ``/dev/shm`` where it exists) and one
    small message per worker on a pipe. Workers find and crop their objects themselves.
    No background thread competes with the feeder for the interpreter lock (a
    ``multiprocessing.Queue`` would add one; measured on an H200 it slowed 1-worm
    tracking from 136 to 79 frames/s).

    Parameters
    ----------
    object_ids : objects to skeletonize (others in the frames are ignored).
    n_points : points per centerline.
    workers : processes started for this stream alone (objects are spread over them;
        each follows its objects), when no ``pool`` is given.
    ring_bytes : size of the ring of label frames (4 to 256 frames); the feeder waits
        when the workers are that far behind.
    pool : a :class:`SkeletonPool` whose workers (up to one per object) this stream
        uses; they stay up when the stream closes.
    """

    def __init__(
        self,
        object_ids: Iterable[int],
        n_points: int = 49,
        workers: int = 1,
        ring_bytes: int = RING_BYTES,
        pool: SkeletonPool | None = None,
    ) -> None:
        import threading

        self.ids = {int(o) for o in object_ids}
        self.n_points = int(n_points)
        self.ring_bytes = int(ring_bytes)
        self.ring_size = 0  # frames, set by the first frame's size
        self._own_pool = pool is None
        if pool is None:  # no more processes than objects
            pool = SkeletonPool(max(1, min(int(workers), len(self.ids))))
        elif pool.current is not None:
            pool.current.close()
        self.pool = pool
        pool.epoch += 1
        self.epoch = pool.epoch
        pool.current = self
        # each worker follows its share of the objects through time
        n = max(1, min(pool.size, len(self.ids)))
        ids = sorted(self.ids)
        self._lock = threading.RLock()  # the tracking thread feeds; a UI thread may collect
        self._conns = pool.conns[:n]
        self._procs = pool.procs[:n]
        self._ring: np.ndarray | None = None
        self._ring_msg: tuple | None = None
        self._sent = 0  # frames fed (sequence numbers 0 .. _sent - 1)
        self._acks: dict[int, int] = {}  # seq -> workers that replied
        self._done = 0  # every seq below this was answered by every worker
        self.results = StreamedSkeletons(self.ids)
        self._partial: dict[int, list] = {}  # seq -> [signature, slices, workers told]
        self.closed = False
        try:
            for index, conn in enumerate(pool.conns):
                mine = set(ids[index::n]) if index < n else set()
                conn.send(("begin", self.epoch, mine, self.n_points))
        except OSError:
            self._broken("a skeleton worker stopped; skeletons are made after tracking")

    def _broken(self, message: str) -> None:
        log.warning(message)
        self.pool.broken = True
        self.close()

    def _open_ring(self, frame: np.ndarray) -> np.ndarray | None:
        """Take the pool's ring for frames like this one; return its frames (None: no ring)."""
        try:
            ring = self.pool.ring(frame.shape, frame.dtype, self.ring_bytes)
        except OSError as exc:
            self._broken(f"no room for the skeleton workers' frames ({exc}); skeletons come later")
            return None
        self.ring_size = ring.size
        self._ring = ring.frames
        self._ring_msg = ring.msg
        return self._ring

    def feed(self, frame_index: int, label_frame: np.ndarray) -> None:
        """Queue one written label frame (one copy into the ring, one message each)."""
        with self._lock:
            self._feed(frame_index, label_frame)

    def _feed(self, frame_index: int, label_frame: np.ndarray) -> None:
        if self.closed:
            return
        frames = self._ring
        if frames is None:
            frames = self._open_ring(label_frame)
            if frames is None:
                return
        elif label_frame.shape != frames.shape[1:]:
            raise ValueError("all frames of a stream must have the same shape")
        seq = self._sent
        while seq - self._done >= self.ring_size:  # the slot's last reader must be done
            if not self._collect(block=True, timeout=60.0, until=seq - self.ring_size + 1):
                self._broken("the skeleton workers stopped answering; streaming stops here")
                return
        slot = seq % self.ring_size
        frames[slot] = label_frame
        msg = (self.epoch, seq, int(frame_index), slot, self._ring_msg)
        try:
            for conn in self._conns:
                conn.send(msg)
        except OSError:  # a worker died: tracking goes on, skeletons are made afterwards
            self._broken("a skeleton worker stopped; the rest is skeletonized after tracking")
            return
        self._sent += 1
        self._collect(block=False)

    def _collect(self, block: bool, timeout: float | None = None, until: int | None = None) -> bool:
        """Move finished results into :attr:`results`.

        Until every frame below ``until`` (default: all fed) is answered; without ``block``
        only what is ready. False when the workers did not deliver (``timeout`` seconds
        passed, or a worker died).
        """
        import time
        from multiprocessing.connection import wait

        goal = self._sent if until is None else until
        end = None if timeout is None else time.monotonic() + timeout
        n = len(self._conns)
        while self._done < goal:
            ready: list[Any] = wait(self._conns, timeout=1.0 if block else 0)  # Connections
            if not ready:
                if not block:
                    return True
                if not all(p.is_alive() for p in self._procs):
                    return False
                if end is not None and time.monotonic() > end:
                    return False
                continue
            for conn in ready:
                try:
                    epoch, seq, out, info = conn.recv()
                except (EOFError, OSError):
                    return False
                self.pool._ready.add(self._conns.index(conn))  # it answers: it is up
                if epoch != self.epoch:  # its "ready", or left over from an earlier stream
                    continue
                self._acks[seq] = self._acks.get(seq, 0) + 1
                for key_t_o, key, item in out:
                    self.results[key_t_o] = (key, item)
                self._frame_info(seq, *info)
            while self._acks.get(self._done) == n:
                del self._acks[self._done]
                self._done += 1
        return True

    def _frame_info(self, seq: int, t: int, signature: tuple, boxes: dict) -> None:
        """Record one worker's part of the frame fed as ``seq`` (frame ``t``).

        The part is its signature and its objects' boxes. Published to the cache once every
        worker has told its
        part of that feed (a frame missing one worker's objects would hide them from
        the stack loop); a frame fed again is published again, from its last feed.
        """
        part = self._partial.setdefault(seq, [signature, {}, 0])
        part[1].update({o: (slice(a, b), slice(c, d)) for o, (a, b, c, d) in boxes.items()})
        part[2] += 1
        if part[2] == len(self._conns):
            del self._partial[seq]
            if part[0] == signature:  # all read the same ring slot
                self.results.frames[t] = (part[0], part[1])

    def cache(self, timeout: float | None = 600.0) -> StreamedSkeletons:
        """Wait for everything fed so far; the ``skeletonize_labels`` cache."""
        with self._lock:
            if not self.closed and not self._collect(block=True, timeout=timeout):
                log.warning("the skeleton workers did not finish in time; computing the rest here")
            return self.results

    def close(self) -> None:
        """End the stream; results already collected stay in :attr:`results`.

        Its own workers stop, a pool's stay up for the next stream.
        """
        import contextlib

        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self.pool.current is self:
                self.pool.current = None
            if self._own_pool:
                self.pool.close()
            else:  # the pool's workers drop this stream's frames still queued
                for conn in self._conns:
                    with contextlib.suppress(OSError, ValueError):
                        conn.send(("end", self.epoch))
        self._ring = None  # the pool's: kept for the next stream, deleted with the pool

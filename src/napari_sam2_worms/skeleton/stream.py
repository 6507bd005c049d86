"""Skeletonize frames in worker processes while they are being tracked.

During a propagation the GPU (or the classic tracker) produces one label frame at a
time; skeletons used to be computed only afterwards. A :class:`SkeletonStream` takes
each frame as it is written (:meth:`SkeletonStream.feed`: the object crops are cut
here, which is cheap) and worker processes skeletonize them meanwhile, each following
its objects through time as :func:`~napari_sam2_worms.skeleton.skeletonize_labels`
does. The results form a cache for ``skeletonize_labels(..., cache=...)``: every entry
carries a key of all it depends on (the label crop, its position, the previous
centerline), and the stack loop uses an entry only where the key is what it meets, so
tracks are the same with or without the stream; the stream only saves time. It pays
for a forward run (frames fed in increasing order, as the stack loop reads them) that
starts after unlabelled frames: :func:`stream_for_run` decides.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from .labels import PrevChain, _crop, _object_slices, item_key, skeleton_item

log = logging.getLogger(__name__)

#: bytes of label frames shared with the workers (a ring; see SkeletonStream)
RING_BYTES = 32 * 2**20

#: videos shorter than this skeletonize after tracking (starting processes costs ~1 s)
STREAM_MIN_FRAMES = 500


def auto_workers(n_frames: int) -> int:
    """Worker processes worth streaming skeletons to for a video of ``n_frames``."""
    import os

    if n_frames < STREAM_MIN_FRAMES:
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def _worker(conn: Any, ids: set[int], n_points: int) -> None:
    """Worker process: skeletonize the objects ``ids`` of each frame announced on
    ``conn`` as ``(seq, frame, slot, ring)``; the label frame is read from the shared
    ring file. Replies ``(seq, items)`` for every frame, so the feeder
    knows when a ring slot is free again."""
    chain = PrevChain()
    rings: dict[tuple, np.ndarray] = {}
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        seq, t, slot, ring = msg
        frames = rings.get(ring)
        if frames is None:
            path, shape, dtype = ring
            frames = rings[ring] = np.memmap(path, dtype=dtype, mode="r", shape=shape)
        frame = np.array(frames[slot])  # own copy: the slot is reused once we reply
        out = []
        for oid, sl in _object_slices(frame).items():
            if oid not in ids:
                continue
            sub, r0, c0, border = _crop(frame, sl)
            p = chain.get(oid, t)
            key = item_key(sub, r0, c0, border, p, n_points)
            try:
                item = skeleton_item(sub, oid, r0, c0, border, n_points, p)
            except Exception:  # the stack loop will compute (and report) it
                log.debug("streamed skeleton of object %d, frame %d failed", oid, t, exc_info=True)
                continue
            chain.update(oid, t, item[1])
            out.append(((t, oid), key, item))
        try:
            conn.send((seq, out))
        except OSError:  # the stream was closed without waiting for us
            return


def stream_for_run(
    labels: np.ndarray,
    object_ids: Iterable[int],
    runs: list[tuple[int, int, bool]],
    workers: int,
    n_points: int = 49,
) -> SkeletonStream | None:
    """A stream for a propagation made of ``runs`` ((start, stop, reverse) each), or
    None where its results could not be reused: not a single forward run, or objects
    labelled on the two frames before it (the stack loop would meet other previous
    centerlines there, and so on down the run)."""
    ids = sorted(int(o) for o in object_ids)
    if workers <= 0 or len(runs) != 1 or runs[0][2] or not ids:
        return None
    a = runs[0][0]
    if a > 0 and np.isin(labels[max(a - 2, 0) : a], np.asarray(ids, labels.dtype)).any():
        return None
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
    workers : processes (objects are spread over them; each follows its objects).
    ring_bytes : size of the ring of label frames (4 to 64 frames); the feeder waits
        when the workers are that far behind.
    """

    def __init__(
        self,
        object_ids: Iterable[int],
        n_points: int = 49,
        workers: int = 1,
        ring_bytes: int = RING_BYTES,
    ) -> None:
        import multiprocessing
        import threading

        self.ids = {int(o) for o in object_ids}
        self.n_points = int(n_points)
        self.ring_bytes = int(ring_bytes)
        self.ring_size = 0  # frames, set by the first frame's size
        ctx = multiprocessing.get_context("spawn")  # safe beside CUDA and Qt threads
        # no more processes than objects; each follows its share of them through time
        n = max(1, min(int(workers), len(self.ids)))
        ids = sorted(self.ids)
        self._lock = threading.RLock()  # the tracking thread feeds; a UI thread may collect
        self._conns = []
        self._procs = []
        for index in range(n):
            mine, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(
                target=_worker,
                args=(theirs, set(ids[index::n]), self.n_points),
                name="skeleton-stream",
                daemon=True,
            )
            proc.start()
            theirs.close()
            self._conns.append(mine)
            self._procs.append(proc)
        self._ring: np.memmap | None = None
        self._ring_path: str | None = None
        self._ring_msg: tuple | None = None
        self._sent = 0  # frames fed (sequence numbers 0 .. _sent - 1)
        self._acks: dict[int, int] = {}  # seq -> workers that replied
        self._done = 0  # every seq below this was answered by every worker
        self.results: dict[tuple[int, int], tuple] = {}
        self.closed = False

    def _open_ring(self, frame: np.ndarray) -> None:
        import os
        import tempfile

        self.ring_size = int(np.clip(self.ring_bytes // max(frame.nbytes, 1), 4, 64))
        need = 2 * self.ring_size * frame.nbytes
        folder = None  # the system's temporary folder, unless /dev/shm has room (RAM)
        try:
            st = os.statvfs("/dev/shm")
            if st.f_bavail * st.f_frsize > need:
                folder = "/dev/shm"
        except (OSError, AttributeError):
            pass
        fd, path = tempfile.mkstemp(prefix="nsw-skeleton-ring-", suffix=".u", dir=folder)
        os.close(fd)
        shape = (self.ring_size, *frame.shape)
        self._ring = np.memmap(path, dtype=frame.dtype, mode="w+", shape=shape)
        self._ring_path = path
        self._ring_msg = (path, shape, frame.dtype.str)

    def feed(self, frame_index: int, label_frame: np.ndarray) -> None:
        """Queue one written label frame (one copy into the ring, one message each)."""
        with self._lock:
            self._feed(frame_index, label_frame)

    def _feed(self, frame_index: int, label_frame: np.ndarray) -> None:
        if self.closed:
            return
        if self._ring is None:
            self._open_ring(label_frame)
        elif label_frame.shape != self._ring.shape[1:]:
            raise ValueError("all frames of a stream must have the same shape")
        seq = self._sent
        while seq - self._done >= self.ring_size:  # the slot's last reader must be done
            if not self._collect(block=True, timeout=60.0, until=seq - self.ring_size + 1):
                log.warning("the skeleton workers stopped answering; streaming stops here")
                self.close()
                return
        slot = seq % self.ring_size
        self._ring[slot] = label_frame
        msg = (seq, int(frame_index), slot, self._ring_msg)
        try:
            for conn in self._conns:
                conn.send(msg)
        except OSError:  # a worker died: tracking goes on, skeletons are made afterwards
            log.warning("a skeleton worker stopped; the rest is skeletonized after tracking")
            self.close()
            return
        self._sent += 1
        self._collect(block=False)

    def _collect(self, block: bool, timeout: float | None = None, until: int | None = None) -> bool:
        """Move finished results into :attr:`results` until every frame below ``until``
        (default: all fed) is answered; without ``block`` only what is ready. False when
        the workers did not deliver (``timeout`` seconds passed, or a worker died)."""
        import time
        from multiprocessing.connection import wait

        goal = self._sent if until is None else until
        end = None if timeout is None else time.monotonic() + timeout
        n = len(self._conns)
        while self._done < goal:
            ready = wait(self._conns, timeout=1.0 if block else 0)
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
                    seq, out = conn.recv()
                except (EOFError, OSError):
                    return False
                self._acks[seq] = self._acks.get(seq, 0) + 1
                for key_t_o, key, item in out:
                    self.results[key_t_o] = (key, item)
            while self._acks.get(self._done) == n:
                del self._acks[self._done]
                self._done += 1
        return True

    def cache(self, timeout: float | None = 600.0) -> dict[tuple[int, int], tuple]:
        """Wait for everything fed so far; the ``skeletonize_labels`` cache."""
        with self._lock:
            if not self.closed and not self._collect(block=True, timeout=timeout):
                log.warning("the skeleton workers did not finish in time; computing the rest here")
            return self.results

    def close(self) -> None:
        """Stop the workers (results already collected stay in :attr:`results`)."""
        import contextlib
        import os

        with self._lock:
            if self.closed:
                return
            self.closed = True
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.send(None)
                # a worker blocked sending results nobody will read now gets an error
                conn.close()
            for proc in self._procs:
                proc.join(timeout=5.0)
                if proc.is_alive():
                    proc.terminate()
        self._ring = None
        if self._ring_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._ring_path)
            self._ring_path = None

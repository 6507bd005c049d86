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
import queue
from collections.abc import Iterable
from typing import Any

import numpy as np

from .labels import PrevChain, _crop, _object_slices, item_key, skeleton_item

log = logging.getLogger(__name__)

#: videos shorter than this skeletonize after tracking (starting processes costs ~1 s)
STREAM_MIN_FRAMES = 500


def auto_workers(n_frames: int) -> int:
    """Worker processes worth streaming skeletons to for a video of ``n_frames``."""
    import os

    if n_frames < STREAM_MIN_FRAMES:
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def _worker(inbox: Any, outbox: Any, n_points: int) -> None:
    """Worker process: (frame, [(object, crop, row0, col0, border), ...]) -> items."""
    chain = PrevChain()
    while True:
        msg = inbox.get()
        if msg is None:
            return
        t, batch = msg
        out = []
        for oid, sub, r0, c0, border in batch:
            p = chain.get(oid, t)
            key = item_key(sub, r0, c0, border, p, n_points)
            try:
                item = skeleton_item(sub, oid, r0, c0, border, n_points, p)
            except Exception:  # the stack loop will compute (and report) it
                log.debug("streamed skeleton of object %d, frame %d failed", oid, t, exc_info=True)
                continue
            chain.update(oid, t, item[1])
            out.append(((t, oid), key, item))
        outbox.put(out)


def stream_for_run(
    labels: np.ndarray, object_ids: Iterable[int], runs: list[tuple[int, int, bool]], workers: int
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
    return SkeletonStream(ids, workers=workers)


class SkeletonStream:
    """Worker processes skeletonizing label frames as they arrive.

    Parameters
    ----------
    object_ids : objects to skeletonize (others in the frames are ignored).
    n_points : points per centerline.
    workers : processes (objects are spread over them; each follows its objects).
    """

    def __init__(self, object_ids: Iterable[int], n_points: int = 49, workers: int = 1) -> None:
        import multiprocessing

        self.ids = {int(o) for o in object_ids}
        self.n_points = int(n_points)
        ctx = multiprocessing.get_context("spawn")  # safe beside CUDA and Qt threads
        n = max(1, int(workers))
        self._inboxes = [ctx.Queue() for _ in range(n)]
        self._outbox = ctx.Queue()
        self._procs = [
            ctx.Process(
                target=_worker,
                args=(box, self._outbox, self.n_points),
                name="skeleton-stream",
                daemon=True,
            )
            for box in self._inboxes
        ]
        for proc in self._procs:
            proc.start()
        self._sent = 0
        self._received = 0
        self.results: dict[tuple[int, int], tuple] = {}
        self.closed = False

    def feed(self, frame_index: int, label_frame: np.ndarray) -> None:
        """Queue one written label frame (copies the crops it needs)."""
        if self.closed or not label_frame.any():
            return
        batches: list[list] = [[] for _ in self._inboxes]
        for oid, sl in _object_slices(label_frame).items():
            if oid in self.ids:
                sub, r0, c0, border = _crop(label_frame, sl)
                batches[oid % len(batches)].append((oid, sub.copy(), r0, c0, border))
        for box, batch in zip(self._inboxes, batches):
            if batch:
                box.put((int(frame_index), batch))
                self._sent += 1
        self._collect(block=False)

    def _collect(self, block: bool, timeout: float | None = None) -> bool:
        """Move finished results into :attr:`results`; False when the workers did not
        deliver everything (``timeout`` seconds passed, or a worker died)."""
        import time

        end = None if timeout is None else time.monotonic() + timeout
        while self._received < self._sent:
            try:
                out = self._outbox.get(block=block, timeout=1.0 if block else None)
            except queue.Empty:
                if not block:
                    return True
                if not all(p.is_alive() for p in self._procs):
                    return False
                if end is not None and time.monotonic() > end:
                    return False
                continue
            self._received += 1
            for key_t_o, key, item in out:
                self.results[key_t_o] = (key, item)
        return True

    def cache(self, timeout: float | None = 600.0) -> dict[tuple[int, int], tuple]:
        """Wait for everything fed so far; the ``skeletonize_labels`` cache."""
        if not self._collect(block=True, timeout=timeout):
            log.warning("the skeleton workers did not finish in time; computing the rest here")
        return self.results

    def close(self) -> None:
        """Stop the workers (results already collected stay in :attr:`results`)."""
        if self.closed:
            return
        self.closed = True
        for box in self._inboxes:
            box.put(None)
        for proc in self._procs:
            proc.join(timeout=5.0)
            if proc.is_alive():
                proc.terminate()

"""The session's skeleton workers.

A pool, the stream of the current propagation, and what earlier streams computed.

A :class:`~napari_sam2_worms.engine.session.TrackingSession` owns one
:class:`SkeletonFeed`. It starts the worker processes as soon as it is given a worker
count (they take about a second to start), hands each streamable forward run a
:class:`~napari_sam2_worms.skeleton.stream.SkeletonStream` on them, and keeps what every
stream finished in one cache for ``skeletons()`` (an entry is reused only where its key
still matches the label stack). No Qt, no torch.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable


class SkeletonFeed:
    """Skeleton worker pool, current stream and merged results of one session."""

    def __init__(self, frame_shape: tuple[int, ...] | None = None, dtype: Any = None) -> None:
        #: the label frames' shape and type: the pool allocates its ring for them early
        self.frame = None if frame_shape is None else (tuple(frame_shape), np.dtype(dtype))
        self._workers = 0
        self.points = 49  # points per centerline the stream makes (as skeletons())
        self.pool: Any = None  # skeleton.stream.SkeletonPool
        self.stream: Any = None  # skeleton.stream.SkeletonStream of the current run
        self.cache: dict = {}  # merged results of the streams so far
        self._lock = threading.Lock()

    @property
    def workers(self) -> int:
        """Skeleton worker processes (0 = off); setting it starts or stops them."""
        return self._workers

    @workers.setter
    def workers(self, workers: int) -> None:
        workers = max(0, int(workers))
        if workers != self._workers:
            self._close_stream()
            self._close_pool()
        self._workers = workers
        self._ensure_pool()

    def _ensure_pool(self) -> Any:
        """Return the worker pool, or None when streaming is off.

        The pool is started, or restarted after a worker died.
        """
        if self._workers <= 0:
            return None
        if self.pool is not None and not self.pool.usable:
            self._close_pool()
        if self.pool is None:
            from ..skeleton.stream import SkeletonPool

            self.pool = SkeletonPool(self._workers)
            if self.frame is not None:
                self.pool.prepare(*self.frame)
        return self.pool

    def start(
        self, labels: np.ndarray, object_ids: Iterable[int], runs: list[tuple[int, int, bool]]
    ) -> Any:
        """Open a stream for a propagation made of ``runs`` where its results are reusable.

        Else None (:func:`~napari_sam2_worms.skeleton.stream.stream_for_run`).
        The earlier stream's last frames are waited for (the workers are rarely more
        than a few frames behind) and its results kept, not dropped.
        """
        from ..skeleton.stream import stream_for_run

        self.keep_results()
        self.stream = stream_for_run(
            labels, object_ids, runs, self._workers, self.points, pool=self._ensure_pool()
        )
        return self.stream

    def keep_results(self) -> dict:
        """Merge the open stream's results into :attr:`cache`, close it; return the cache.

        Waits up to a minute for the stream's last frames. Safe from two threads (a
        propagation starting while ``skeletons()`` runs): the stream is taken under the
        lock, waited for outside it.
        """
        with self._lock:
            stream, self.stream = self.stream, None
        if stream is None:
            return self.cache
        from ..skeleton.labels import merge_streamed

        try:
            got = stream.cache(timeout=60.0)
            with self._lock:
                self.cache = merge_streamed(self.cache, got)
        finally:
            stream.close()
        return self.cache

    def _close_stream(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def _close_pool(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def close(self) -> None:
        """Stop the stream and the workers; forget the results."""
        self._close_stream()
        self._close_pool()
        self.cache = {}

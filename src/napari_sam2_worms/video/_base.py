"""Base class of the lazy videos: numpy-style indexing, a bounded LRU frame cache, a lock."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: materialising a video larger than this (bytes) logs a warning
LARGE_ARRAY_BYTES = 1 << 30


class VideoError(OSError):
    """A video could not be opened or read; the message says which file and what to do."""


class VideoNotFoundError(VideoError, FileNotFoundError):
    """The video path does not exist."""


def _normalise_key(key: Any, ndim: int) -> tuple:
    """Return ``key`` as a tuple without Ellipsis (expanded to full slices)."""
    if not isinstance(key, tuple):
        key = (key,)
    n_ell = sum(k is Ellipsis for k in key)
    if n_ell > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if n_ell == 1:
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        n_real = sum(k is not None for k in key) - 1
        fill = (slice(None),) * max(ndim - n_real, 0)
        key = key[:i] + fill + key[i + 1 :]
    return key


class LazyVideo:
    """A video that decodes frames on demand; indexable like a ``(T, H, W[, 3])`` array.

    Subclasses implement :meth:`_read_frame`. Reads are serialised by a re-entrant lock
    (safe to use from a worker thread and napari's main thread at once) and decoded
    frames are kept in an LRU cache bounded by count and bytes.

    Parameters
    ----------
    path : the file or folder the frames come from (``None`` for in-memory data).
    shape : ``(T, H, W)`` for grey or ``(T, H, W, 3)`` for colour video.
    dtype : dtype of the frames.
    fps : frames per second.
    cache_frames, cache_bytes : bounds of the decoded-frame cache.
    """

    def __init__(
        self,
        path: str | Path | None,
        shape: tuple[int, ...],
        dtype: Any,
        fps: float,
        cache_frames: int = 64,
        cache_bytes: int = 256 << 20,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self._shape = tuple(int(s) for s in shape)
        self._dtype = np.dtype(dtype)
        self.fps = float(fps)
        self._lock = threading.RLock()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_nbytes = 0
        self._cache_frames = max(int(cache_frames), 1)
        self._cache_bytes = int(cache_bytes)
        self._closed = False

    # -- array protocol -----------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """``(T, H, W)`` or ``(T, H, W, 3)``."""
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        """Frame dtype (``uint8`` for decoded video)."""
        return self._dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions (3 for grey, 4 for colour)."""
        return len(self._shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self._shape))

    @property
    def nbytes(self) -> int:
        """Bytes the materialised array would take."""
        return self.size * self._dtype.itemsize

    @property
    def is_colour(self) -> bool:
        """True for ``(T, H, W, 3)`` video."""
        return self.ndim == 4

    def __len__(self) -> int:
        return self._shape[0]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(path={str(self.path)!r}, shape={self.shape}, "
            f"dtype={self.dtype}, fps={self.fps:g})"
        )

    def __getitem__(self, key: Any) -> np.ndarray:
        key = _normalise_key(key, self.ndim)
        if not key:
            return np.asarray(self)
        first, rest = key[0], key[1:]
        n = len(self)
        if first is None:
            return self[(slice(None),) + tuple(rest)][None]
        if isinstance(first, np.ndarray) and first.ndim == 0:
            first = first.item()
        if isinstance(first, (int, np.integer)) and not isinstance(first, bool):
            i = int(first)
            if i < -n or i >= n:
                raise IndexError(f"frame index {i} is out of range for a video of {n} frames")
            frame = self.get_frame(i % n)
            return frame[rest] if rest else frame
        if isinstance(first, slice):
            indices = np.arange(n)[first]
        else:
            arr = np.asarray(first)
            if arr.dtype == bool:
                if arr.shape != (n,):
                    raise IndexError(f"boolean frame index must have shape ({n},)")
                indices = np.flatnonzero(arr)
            elif np.issubdtype(arr.dtype, np.integer):
                if np.any((arr < -n) | (arr >= n)):
                    raise IndexError(f"frame index out of range for a video of {n} frames")
                indices = arr % n
            else:
                raise IndexError(f"unsupported frame index {first!r}")
        flat = np.asarray(indices).ravel()
        out = np.empty((flat.size, *self._shape[1:]), self._dtype)
        for j, index in enumerate(flat):
            out[j] = self.get_frame(int(index))
        out = out.reshape(np.shape(indices) + self._shape[1:])
        if rest:
            lead = (slice(None),) * np.ndim(indices)
            out = out[lead + rest]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self.nbytes > LARGE_ARRAY_BYTES:
            log.warning("materialising %s as one array: %.1f GB of memory", self, self.nbytes / 1e9)
        out = self[:]
        return out.astype(dtype, copy=False) if dtype is not None else out

    def __iter__(self):
        for i in range(len(self)):
            yield self.get_frame(i)

    # -- frames ---------------------------------------------------------------------
    def get_frame(self, index: int) -> np.ndarray:
        """Return frame ``index`` (read-only array; from the cache when possible)."""
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"frame index {index} is out of range for a video of {n} frames")
        with self._lock:
            if self._closed:
                raise VideoError(f"{self.path}: the video is closed; open it again")
            frame = self._cache.get(index)
            if frame is not None:
                self._cache.move_to_end(index)
                return frame
            frame = self._read_frame(index)
            self._remember(index, frame)
            return frame

    def _remember(self, index: int, frame: np.ndarray) -> None:
        """Put a decoded frame in the LRU cache (caller holds the lock)."""
        frame.flags.writeable = False
        if index in self._cache:
            return
        self._cache[index] = frame
        self._cache_nbytes += frame.nbytes
        while self._cache and (
            len(self._cache) > self._cache_frames or self._cache_nbytes > self._cache_bytes
        ):
            _, old = self._cache.popitem(last=False)
            self._cache_nbytes -= old.nbytes

    def _read_frame(self, index: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- lifetime -------------------------------------------------------------------
    def close(self) -> None:
        """Release the file handles and the cache; further reads raise :class:`VideoError`."""
        with self._lock:
            self._closed = True
            self._cache.clear()
            self._cache_nbytes = 0
            self._close()

    def _close(self) -> None:
        """Release subclass resources (caller holds the lock)."""

    def __enter__(self) -> LazyVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""In-memory video: an ``ndarray`` ``(T, H, W[, 3])`` with an fps."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import LazyVideo


class ArrayVideo(LazyVideo):
    """Wrap an in-memory array ``(T, H, W)`` or ``(T, H, W, 3)`` as a video.

    Parameters
    ----------
    data : the frames (not copied).
    fps : frames per second.
    path : optional file the frames came from.
    """

    def __init__(self, data: Any, fps: float = 25.0, path: Any = None) -> None:
        data = np.asarray(data)
        if data.ndim == 2:
            data = data[None]
        if data.ndim not in (3, 4) or (data.ndim == 4 and data.shape[-1] != 3):
            raise ValueError(
                f"an ArrayVideo needs a (T, H, W) or (T, H, W, 3) array, got shape {data.shape}"
            )
        super().__init__(path, data.shape, data.dtype, fps, cache_frames=1)
        self._data = data

    @property
    def data(self) -> np.ndarray:
        """The wrapped array."""
        return self._data

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._data[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self._data, dtype=dtype)

    def get_frame(self, index: int) -> np.ndarray:
        """Return frame ``index`` (a view of the array)."""
        if not 0 <= index < len(self):
            raise IndexError(
                f"frame index {index} is out of range for a video of {len(self)} frames"
            )
        return self._data[index]

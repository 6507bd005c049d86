"""In-memory video: an ``ndarray`` ``(T, H, W[, 3])`` with an fps."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import LazyVideo
from ._scale import intensity_range, needs_scaling, to_uint8


class ArrayVideo(LazyVideo):
    """Wrap an in-memory array ``(T, H, W)`` or ``(T, H, W, 3)`` as a video.

    Frames of any type but ``uint8`` are given in 8 bits, mapped from one intensity
    range for the whole video (see :mod:`napari_sam2_worms.video._scale`), as
    :func:`~napari_sam2_worms.video.open_video` gives them.

    Parameters
    ----------
    data : the frames (not copied).
    fps : frames per second.
    path : optional file the frames came from.
    scale : map non-``uint8`` frames to 8 bits (default); ``False`` gives them as they are.
    """

    def __init__(self, data: Any, fps: float = 25.0, path: Any = None, scale: bool = True) -> None:
        data = np.asarray(data)
        if data.ndim == 2:
            data = data[None]
        if data.ndim not in (3, 4) or (data.ndim == 4 and data.shape[-1] != 3):
            raise ValueError(
                f"an ArrayVideo needs a (T, H, W) or (T, H, W, 3) array, got shape {data.shape}"
            )
        self._range: tuple[float, float] | None = None
        if scale and needs_scaling(data.dtype):
            self._range = intensity_range(data)
        dtype = np.uint8 if self._range is not None else data.dtype
        super().__init__(path, data.shape, dtype, fps, cache_frames=1)
        self._data = data

    @property
    def data(self) -> np.ndarray:
        """The wrapped array (its original values)."""
        return self._data

    @property
    def intensity_range(self) -> tuple[float, float] | None:
        """The values mapped to 0 and 255, or None when frames are given as they are."""
        return self._range

    def _out(self, a: Any) -> np.ndarray:
        return a if self._range is None else to_uint8(a, *self._range)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._out(self._data[key])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self._out(self._data), dtype=dtype)

    def get_frame(self, index: int) -> np.ndarray:
        """Return frame ``index`` (a view of the array when no scaling is needed)."""
        if not 0 <= index < len(self):
            raise IndexError(
                f"frame index {index} is out of range for a video of {len(self)} frames"
            )
        return self._out(self._data[index])

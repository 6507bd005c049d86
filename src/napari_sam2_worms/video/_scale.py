"""8-bit frames from 12/16-bit, signed and float videos, the same way everywhere.

SAM 2 was trained on 8-bit images and the classic tracker works on 8-bit grey; a
12-bit camera frame (0..4095 in uint16) clipped to 0..255 is white, a float frame in
0..1 is black. So every video that is not ``uint8`` is mapped linearly to 0..255 from
one intensity range for the whole video, chosen once from the data:

- the range is the 0.05th to 99.95th percentile of the pixels of up to
  :data:`SAMPLE_FRAMES` frames spread evenly over the video (the first and the last
  included), so a few hot or dead pixels do not squeeze the image, while a worm that
  covers 1 % of a frame keeps its full contrast;
- every frame uses that one range (no per-frame flicker: the classic tracker's
  background model and SAM 2's memory see the same scale on every frame);
- values outside it are clipped; NaN becomes the low end.

:func:`as_uint8` applies it to a video (``open_video`` does so by default, the napari
reader and the backends therefore all see the same frames); :func:`to_uint8` to an
array with a given range. ``uint8`` videos are never changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import LazyVideo

#: frames sampled to choose the range
SAMPLE_FRAMES = 16
#: percentiles of the sampled pixels that map to 0 and 255
PERCENTILES = (0.05, 99.95)
#: at most this many sampled pixels go into the percentile (every k-th of them)
SAMPLE_PIXELS = 4_000_000


def needs_scaling(dtype: Any) -> bool:
    """Tell whether frames of ``dtype`` need scaling: all but ``uint8`` (and bool)."""
    dt = np.dtype(dtype)
    return dt != np.uint8 and dt.kind in "uif"


def intensity_range(frames: Any, n_frames: int | None = None) -> tuple[float, float]:
    """Choose the (low, high) intensities mapped to 0 and 255 for a video or a frame stack.

    Parameters
    ----------
    frames : anything indexable by frame, ``(T, H, W[, C])`` (a video or an array).
    n_frames : frames to sample (default :data:`SAMPLE_FRAMES`).

    Returns
    -------
    (low, high) with ``high > low``, finite.
    """
    n = len(frames)
    k = SAMPLE_FRAMES if n_frames is None else max(int(n_frames), 1)
    idx = np.unique(np.linspace(0, max(n - 1, 0), min(k, max(n, 1))).round().astype(int))
    values = []
    budget = max(SAMPLE_PIXELS // max(len(idx), 1), 1)
    for i in idx:
        a = np.asarray(frames[int(i)]).ravel()
        step = max(a.size // budget, 1)
        values.append(a[::step])
    data = np.concatenate(values).astype(np.float64) if values else np.zeros(1)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(data, PERCENTILES))
    if not hi > lo:  # a flat video (or nearly): its full range, else a unit step
        lo, hi = float(data.min()), float(data.max())
        if not hi > lo:
            hi = lo + 1.0
    return lo, hi


def to_uint8(array: Any, low: float, high: float) -> np.ndarray:
    """Map ``low..high`` linearly to 0..255 (clipped, NaN -> 0), as ``uint8``."""
    a = np.asarray(array)
    if a.dtype == np.uint8:
        return a
    scale = 255.0 / (float(high) - float(low))
    out = (a.astype(np.float32) - np.float32(low)) * np.float32(scale) + np.float32(0.5)
    np.nan_to_num(out, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


class ScaledVideo(LazyVideo):
    """A ``uint8`` view of a video of another type (see the module docstring).

    Parameters
    ----------
    source : the video with its original values (kept as :attr:`raw`).
    low, high : the range mapped to 0..255 (default: :func:`intensity_range`).
    """

    def __init__(self, source: Any, low: float | None = None, high: float | None = None) -> None:
        if low is None or high is None:
            low, high = intensity_range(source)
        self.raw = source
        self.low, self.high = float(low), float(high)
        path = getattr(source, "path", None)
        fps = float(getattr(source, "fps", 25.0) or 25.0)
        super().__init__(path, tuple(source.shape), np.uint8, fps, cache_frames=1)

    @property
    def intensity_range(self) -> tuple[float, float]:
        """The source values mapped to 0 and 255."""
        return self.low, self.high

    def __repr__(self) -> str:
        return (
            f"ScaledVideo({self.raw!r}, {np.dtype(self.raw.dtype)} "
            f"{self.low:g}..{self.high:g} -> uint8)"
        )

    def __getitem__(self, key: Any) -> np.ndarray:
        return to_uint8(self.raw[key], self.low, self.high)

    def get_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` in 8 bits."""
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"frame index {index} is out of range for a video of {n} frames")
        return to_uint8(self.raw[index], self.low, self.high)

    def _close(self) -> None:
        close = getattr(self.raw, "close", None)
        if close is not None:
            close()


def as_uint8(video: Any) -> Any:
    """Return ``video`` itself when its frames are ``uint8`` (or not pictures), else scaled.

    A :class:`ScaledVideo` of it (one range for the whole video).
    """
    if isinstance(video, ScaledVideo) or not needs_scaling(getattr(video, "dtype", np.uint8)):
        return video
    return ScaledVideo(video)

"""Multi-page TIFF and ``(T, H, W[, 3])`` TIFF stacks through tifffile."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ._base import LazyVideo, VideoError

log = logging.getLogger(__name__)


class TiffVideo(LazyVideo):
    """A TIFF stack read memory-mapped when possible, page by page otherwise.

    Parameters
    ----------
    path : ``.tif``/``.tiff`` file.
    fps : frames per second (TIFF stores none; ImageJ ``finterval`` is used if present).
    """

    def __init__(self, path: str | Path, fps: float | None = None, **cache: Any) -> None:
        import tifffile

        path = Path(path)
        try:
            self._tif = tifffile.TiffFile(str(path))
            series = self._tif.series[0]
        except Exception as exc:
            raise VideoError(f"{path}: cannot be read as a TIFF stack ({exc}).") from exc
        shape = tuple(series.shape)
        if len(shape) == 2 or (len(shape) == 3 and shape[-1] in (3, 4) and len(series.pages) == 1):
            shape = (1, *shape)
        if len(shape) == 4 and shape[-1] == 4:
            log.warning("%s: dropping the alpha channel", path)
        if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (3, 4)):
            self._tif.close()
            raise VideoError(
                f"{path}: TIFF of shape {series.shape} is not a (T, H, W) or (T, H, W, 3) stack."
            )
        self._rgba = len(shape) == 4 and shape[-1] == 4
        out_shape = (*shape[:3], 3) if self._rgba else shape
        if fps is None:
            ij = self._tif.imagej_metadata or {}
            fi = ij.get("finterval")
            fps = 1.0 / float(fi) if fi else 25.0
        super().__init__(path, out_shape, series.dtype, fps, **cache)
        self._memmap: np.ndarray | None = None
        self._pages: Any = None  # the series' pages where it cannot be memory-mapped
        self._series = series
        try:
            self._memmap = tifffile.memmap(str(path), mode="r").reshape(shape)
        except Exception:
            if len(series.pages) == shape[0]:
                self._pages = series.pages
            else:
                log.warning("%s: cannot map or page this TIFF; loading it into memory", path)
                self._memmap = series.asarray().reshape(shape)

    def _read_frame(self, index: int) -> np.ndarray:
        if self._memmap is not None:
            frame = np.array(self._memmap[index])
        else:
            frame = self._pages[index].asarray()
            frame = frame.reshape(self._shape[1:3] + frame.shape[2:])
        return frame[..., :3] if self._rgba else frame

    def _close(self) -> None:
        self._memmap = None
        self._pages = None
        self._tif.close()

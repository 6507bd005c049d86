"""A folder of JPEG/PNG/TIFF frames in natural numeric order."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from . import IMAGE_SUFFIXES
from ._base import LazyVideo, VideoError

log = logging.getLogger(__name__)

_GREY_MODES = {"L", "I;16", "I;16B", "I;16L", "I", "F", "1"}


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_frames(folder: Path) -> list[Path]:
    """Image files of ``folder`` in natural order (hidden files skipped)."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


class FolderVideo(LazyVideo):
    """Frames stored one image per file; smaller frames are padded (bottom/right) with 0.

    Parameters
    ----------
    path : the folder.
    fps : frames per second (images store none).
    """

    def __init__(self, path: str | Path, fps: float = 25.0, **cache: Any) -> None:
        from PIL import Image

        path = Path(path)
        files = list_frames(path)
        if not files:
            raise VideoError(
                f"{path}: the folder has no image frames ({', '.join(IMAGE_SUFFIXES)})."
            )
        sizes, modes = [], set()
        for f in files:
            try:
                with Image.open(f) as im:  # reads the header only
                    sizes.append(im.size)
                    modes.add(im.mode)
            except Exception as exc:
                raise VideoError(f"{f}: cannot be read as an image ({exc}).") from exc
        w = max(s[0] for s in sizes)
        h = max(s[1] for s in sizes)
        if len(set(sizes)) > 1:
            log.warning(
                "%s: frame sizes differ (%d sizes); padding every frame to %dx%d",
                path,
                len(set(sizes)),
                w,
                h,
            )
        self._files = files
        first = self._load(files[0])
        grey = modes <= _GREY_MODES or (
            first.ndim == 3 and all(self._channels_equal(self._load(f)) for f in files[:3])
        )
        self._grey = grey
        sample = first if first.ndim == 2 else first[..., 0]
        shape = (len(files), h, w) if grey else (len(files), h, w, 3)
        super().__init__(path, shape, sample.dtype, fps, **cache)

    @staticmethod
    def _channels_equal(frame: np.ndarray) -> bool:
        if frame.ndim == 2:
            return True
        f = frame.astype(np.int32)
        return bool(
            np.abs(f[..., 0] - f[..., 1]).max() <= 2 and np.abs(f[..., 0] - f[..., 2]).max() <= 2
        )

    @staticmethod
    def _load(file: Path) -> np.ndarray:
        from PIL import Image

        with Image.open(file) as im:
            if im.mode in ("RGBA", "P", "LA", "CMYK", "YCbCr"):
                im = im.convert("RGB")
            elif im.mode == "F":  # float frames: scaled to 8 bits with the video's range
                return np.asarray(im, dtype=np.float32)
            elif im.mode in ("I", "1"):
                im = im.convert("I;16") if im.mode == "I" else im.convert("L")
            return np.asarray(im)

    def _read_frame(self, index: int) -> np.ndarray:
        try:
            frame = self._load(self._files[index])
        except Exception as exc:
            raise VideoError(f"{self._files[index]}: cannot be read ({exc}).") from exc
        if self._grey and frame.ndim == 3:
            frame = frame[..., 0]
        elif not self._grey and frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=2)
        frame = frame.astype(self._dtype, copy=False)
        h, w = self._shape[1:3]
        if frame.shape[:2] != (h, w):
            out = np.zeros(self._shape[1:], self._dtype)
            out[: frame.shape[0], : frame.shape[1]] = frame
            frame = out
        return frame

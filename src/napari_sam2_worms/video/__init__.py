"""Lazy video readers: containers through PyAV, image folders, TIFF stacks, arrays.

``open_video(path)`` returns a :class:`LazyVideo`, an array-like ``(T, H, W)`` (grey) or
``(T, H, W, 3)`` (colour) object that decodes frames on demand. Its frames are ``uint8``:
12/16-bit, signed and float videos are mapped to 8 bits from one intensity range
chosen from the data (:mod:`._scale`), so both backends and the viewer see the same
picture; ``raw=True`` gives the original values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._array import ArrayVideo
from ._base import LazyVideo, VideoError, VideoNotFoundError
from ._scale import ScaledVideo, as_uint8, intensity_range, to_uint8

__all__ = [
    "CONTAINER_SUFFIXES",
    "IMAGE_SUFFIXES",
    "TIFF_SUFFIXES",
    "VIDEO_SUFFIXES",
    "ArrayVideo",
    "LazyVideo",
    "ScaledVideo",
    "VideoError",
    "VideoNotFoundError",
    "as_uint8",
    "intensity_range",
    "open_video",
    "to_uint8",
]

#: Video files PyAV opens (:class:`._container.ContainerVideo`).
CONTAINER_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
#: TIFF stacks (:class:`._tiff.TiffVideo`).
TIFF_SUFFIXES = (".tif", ".tiff")
#: Every video file :func:`open_video` opens; the napari reader's ``filename_patterns``
#: in ``napari.yaml`` list the same (a test checks).
VIDEO_SUFFIXES = CONTAINER_SUFFIXES + TIFF_SUFFIXES
#: The frame images of a folder video (:class:`._folder.FolderVideo`).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def open_video(
    path: str | Path, fps: float | None = None, *, raw: bool = False, **options: Any
) -> LazyVideo:
    """Open a video lazily, in 8 bits.

    Parameters
    ----------
    path : a video file (mp4, avi, mov, mkv...), a TIFF stack, or a folder of
        JPEG/PNG/TIFF frames (natural numeric order).
    fps : override the frame rate (folders and TIFF store none; default 25).
    raw : give frames with their original type and values; by default a video that is
        not ``uint8`` (12/16-bit, float) comes as a :class:`ScaledVideo`, mapped to
        0..255 from one range for the whole video (0.05th..99.95th percentile of up
        to 16 frames spread over it).
    **options : passed to the reader, e.g. ``grey=True`` for containers,
        ``cache_frames``/``cache_bytes`` for the frame cache.

    Returns
    -------
    LazyVideo
        Use as an array ``(T, H, W[, 3])``; ``close()`` it (or use ``with``) when done.
        A :class:`ScaledVideo` keeps the original reader as ``.raw`` and its range as
        ``.intensity_range``.

    Raises
    ------
    VideoNotFoundError
        ``path`` does not exist.
    VideoError
        The file is not a readable video.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise VideoNotFoundError(f"{path}: no such file or folder; check the path.")
    if path.is_dir():
        from ._folder import FolderVideo

        video: LazyVideo = FolderVideo(path, fps=fps or 25.0, **options)
    elif path.suffix.lower() in TIFF_SUFFIXES:
        from ._tiff import TiffVideo

        video = TiffVideo(path, fps=fps, **options)
    else:
        from ._container import ContainerVideo

        video = ContainerVideo(path, **options)
        if fps:
            video.fps = float(fps)
    if raw:
        return video
    try:
        return as_uint8(video)
    except BaseException:
        video.close()
        raise

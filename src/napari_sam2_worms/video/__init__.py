"""Lazy video readers: containers through PyAV, image folders, TIFF stacks, arrays.

``open_video(path)`` returns a :class:`LazyVideo`, an array-like ``(T, H, W)`` (grey) or
``(T, H, W, 3)`` (colour) object that decodes frames on demand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._array import ArrayVideo
from ._base import LazyVideo, VideoError, VideoNotFoundError

__all__ = [
    "CONTAINER_SUFFIXES",
    "TIFF_SUFFIXES",
    "ArrayVideo",
    "LazyVideo",
    "VideoError",
    "VideoNotFoundError",
    "open_video",
]

CONTAINER_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
TIFF_SUFFIXES = (".tif", ".tiff")


def open_video(path: str | Path, fps: float | None = None, **options: Any) -> LazyVideo:
    """Open a video lazily.

    Parameters
    ----------
    path : a video file (mp4, avi, mov, mkv...), a TIFF stack, or a folder of
        JPEG/PNG/TIFF frames (natural numeric order).
    fps : override the frame rate (folders and TIFF store none; default 25).
    **options : passed to the reader, e.g. ``grey=True`` for containers,
        ``cache_frames``/``cache_bytes`` for the frame cache.

    Returns
    -------
    LazyVideo
        Use as an array ``(T, H, W[, 3])``; ``close()`` it (or use ``with``) when done.

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

        return FolderVideo(path, fps=fps or 25.0, **options)
    if path.suffix.lower() in TIFF_SUFFIXES:
        from ._tiff import TiffVideo

        return TiffVideo(path, fps=fps, **options)
    from ._container import ContainerVideo

    video = ContainerVideo(path, **options)
    if fps:
        video.fps = float(fps)
    return video

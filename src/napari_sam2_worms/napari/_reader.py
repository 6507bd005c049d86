"""napari reader contribution: open videos, TIFF stacks and image folders lazily.

Imports neither napari nor Qt: napari only calls :func:`get_reader`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..video import IMAGE_SUFFIXES, VIDEO_SUFFIXES

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

LayerData = tuple[Any, dict, str]


def _supported(path: Path) -> bool:
    if path.is_dir():
        return any(
            p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            for p in path.iterdir()
        )
    return path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return :func:`read_video` when ``path`` is a video, TIFF or image folder, else ``None``.

    Never raises: an unsupported or unreadable path gives ``None`` so napari tries the
    next reader.
    """
    try:
        paths = [path] if isinstance(path, (str, Path)) else list(path)
        if not paths or not all(_supported(Path(p)) for p in paths):
            return None
    except Exception:
        return None
    return read_video


def read_video(path: str | list[str]) -> list[LayerData]:
    """Open each path lazily and return one image layer per video."""
    from napari_sam2_worms.video import open_video

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers: list[LayerData] = []
    for item in paths:
        p = Path(item)
        video = open_video(p)
        meta = {
            "name": p.stem if p.is_file() else p.name,
            "metadata": {"fps": video.fps, "path": str(p)},
            "rgb": video.ndim == 4,
        }
        layers.append((video, meta, "image"))
    return layers

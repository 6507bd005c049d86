"""napari-sam2-worms: track and skeletonize worms in videos with SAM 2 or a classic tracker.

Importing this package is cheap: it imports neither torch nor Qt. The public
entry points are loaded on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "make_plate", "open_video"]


def __getattr__(name: str) -> Any:  # lazy public API
    if name == "open_video":
        from .video import open_video

        return open_video
    if name == "make_plate":
        from .synthetic import make_plate

        return make_plate
    raise AttributeError(f"module 'napari_sam2_worms' has no attribute {name!r}")

"""The skeleton-track table shared by the skeletonizer, the exporters and the widget.

All coordinates are (x, y) in pixels of the original video, head first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Per-frame features, in this column order in every table we write.
FEATURE_NAMES: tuple[str, ...] = (
    "length",
    "mean_width",
    "area",
    "curvature",
    "centroid_x",
    "centroid_y",
    "centroid_speed",
    "midbody_speed",
)


@dataclass
class SkeletonTracks:
    """Centerlines of K objects over T frames.

    Attributes
    ----------
    points : (T, K, N, 2) float32, (x, y) head first; NaN where there is no skeleton.
    widths : (T, K, N) float32 body width at each point (pixels); NaN where absent.
    good : (T, K) bool, True when the skeleton is trustworthy.
    reason : (T, K) object array of str, why a frame is not good ("" when good):
        e.g. "missing", "coiled", "touching", "border", "small", "identity suspect"
        (two objects may have swapped identities after touching).
    features : name -> (T, K) float32 array; names from :data:`FEATURE_NAMES`.
        Lengths/widths in pixels, area in pixels², speeds in pixels per second.
    object_ids : (K,) int, the label ids of the objects.
    names : K object names (default ``worm1``, ``worm2``...).
    frames : (T,) int, the video frame index of each row (usually ``arange(T)``).
    fps : frames per second of the video (for speeds and exports).
    pixel_size : micrometres per pixel, or None when unknown.
    flipped : (T, K) bool, where the user flipped head and tail.
    """

    points: np.ndarray
    widths: np.ndarray
    good: np.ndarray
    reason: np.ndarray
    features: dict[str, np.ndarray]
    object_ids: np.ndarray
    names: list[str]
    frames: np.ndarray
    fps: float = 1.0
    pixel_size: float | None = None
    flipped: np.ndarray | None = field(default=None)

    @property
    def n_frames(self) -> int:
        """Number of frames (rows)."""
        return self.points.shape[0]

    @property
    def n_objects(self) -> int:
        """Number of objects."""
        return self.points.shape[1]

    @property
    def n_points(self) -> int:
        """Number of points per centerline."""
        return self.points.shape[2]

    @classmethod
    def empty(
        cls,
        n_frames: int,
        object_ids: list[int] | np.ndarray,
        n_points: int = 49,
        *,
        names: list[str] | None = None,
        fps: float = 1.0,
        pixel_size: float | None = None,
    ) -> SkeletonTracks:
        """All-NaN tracks, every frame marked ``missing``."""
        ids = np.asarray(object_ids, dtype=int)
        k = len(ids)
        return cls(
            points=np.full((n_frames, k, n_points, 2), np.nan, np.float32),
            widths=np.full((n_frames, k, n_points), np.nan, np.float32),
            good=np.zeros((n_frames, k), bool),
            reason=np.full((n_frames, k), "missing", dtype=object),
            features={n: np.full((n_frames, k), np.nan, np.float32) for n in FEATURE_NAMES},
            object_ids=ids,
            names=list(names) if names is not None else [f"worm{i}" for i in ids],
            frames=np.arange(n_frames),
            fps=float(fps),
            pixel_size=pixel_size,
            flipped=np.zeros((n_frames, k), bool),
        )

    def index_of(self, object_id: int) -> int:
        """Column of ``object_id`` in the arrays."""
        hits = np.flatnonzero(self.object_ids == object_id)
        if len(hits) == 0:
            raise KeyError(f"object {object_id} is not in these tracks")
        return int(hits[0])

"""Choose what to export: a subset of objects and frames, units, fps and pixel size.

Every exporter works on the :class:`ExportTable` built here, so that subsetting,
unit conversion and the NaN/confidence policy are the same in every format.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..tracks import SkeletonTracks

__all__ = ["UNITS", "ExportError", "ExportTable", "prepare", "subset_tracks"]

#: Coordinate units an export may use -> their long name (as NWB spells it).
UNITS: dict[str, str] = {"px": "pixels", "um": "micrometers", "mm": "millimeters"}


class ExportError(ValueError):
    """The export request cannot be honoured (unknown format, object, frame range or unit)."""


@dataclass
class ExportTable:
    """Tracks ready to write, in the chosen units.

    Attributes
    ----------
    tracks : the selected tracks (pixels, as in :class:`SkeletonTracks`).
    points : (T, K, N, 2) float64 coordinates in ``units``; NaN where not exported.
    confidence : (T, K, N) float64: 1.0 good, 0.0 flagged, NaN where there is no skeleton.
    scale : ``units`` per pixel (1.0 for pixels).
    units : "px", "um" or "mm".
    fps : frames per second used for times.
    pixel_size : micrometres per pixel, or None when unknown.
    times : (T,) seconds of each row, ``frames / fps``.
    speed_factor : ``fps`` / the tracks' own fps; the speeds in ``tracks`` are rescaled.
    """

    tracks: SkeletonTracks
    points: np.ndarray
    confidence: np.ndarray
    scale: float
    units: str
    fps: float
    pixel_size: float | None
    times: np.ndarray
    speed_factor: float = 1.0

    @property
    def keypoint_names(self) -> list[str]:
        """Names of the centerline points, head first."""
        return keypoint_names(self.tracks.n_points)

    @property
    def unit_name(self) -> str:
        """The length unit's name as exports write it."""
        return UNITS[self.units]


def keypoint_names(n_points: int) -> list[str]:
    """``p00``, ``p01``... head first, zero-padded to the width ``n_points`` needs."""
    width = max(2, len(str(n_points - 1)))
    return [f"p{i:0{width}d}" for i in range(n_points)]


def subset_tracks(
    tracks: SkeletonTracks,
    objects: Iterable[int] | None = None,
    frames: tuple[int, int] | None = None,
) -> SkeletonTracks:
    """Copy ``tracks`` restricted to some objects and an inclusive frame range.

    Parameters
    ----------
    tracks : the tracks.
    objects : object ids to keep (in this order); None keeps all.
    frames : ``(start, stop)`` video frame numbers, both included; None keeps all.

    Raises
    ------
    ExportError
        An id is not in the tracks, or the range selects no frame.
    """
    cols = np.arange(tracks.n_objects)
    if objects is not None:
        wanted = [int(o) for o in objects]
        missing = [o for o in wanted if o not in set(tracks.object_ids.tolist())]
        if missing or not wanted:
            raise ExportError(
                f"Object id(s) {missing or wanted} are not in these tracks; "
                f"choose among {tracks.object_ids.tolist()}."
            )
        cols = np.array([tracks.index_of(o) for o in wanted], dtype=int)
    frame_numbers = np.asarray(tracks.frames)
    rows = np.arange(tracks.n_frames)
    if frames is not None:
        start, stop = int(frames[0]), int(frames[1])
        rows = np.flatnonzero((frame_numbers >= start) & (frame_numbers <= stop))
        if start > stop or len(rows) == 0:
            first, last = (
                (int(frame_numbers.min()), int(frame_numbers.max()))
                if len(frame_numbers)
                else (0, -1)
            )
            raise ExportError(
                f"The frame range {start}-{stop} selects no frame; the tracks cover "
                f"frames {first}-{last}."
            )
    ix = np.ix_(rows, cols)
    flipped = tracks.flipped[ix] if tracks.flipped is not None else None
    return replace(
        tracks,
        points=tracks.points[ix],
        widths=tracks.widths[ix],
        good=tracks.good[ix],
        reason=tracks.reason[ix],
        features={k: v[ix] for k, v in tracks.features.items()},
        object_ids=tracks.object_ids[cols],
        names=[tracks.names[c] for c in cols],
        frames=frame_numbers[rows],
        flipped=flipped,
    )


def prepare(
    tracks: SkeletonTracks,
    *,
    pixel_size: float | None = None,
    fps: float | None = None,
    objects: Iterable[int] | None = None,
    frames: tuple[int, int] | None = None,
    units: str = "px",
    include_flagged: bool = False,
) -> ExportTable:
    """Select, convert and apply the NaN/confidence policy.

    Coordinates are NaN where a frame has no good skeleton (``good`` is False), unless
    ``include_flagged`` keeps flagged skeletons. Confidence is 1.0 where the skeleton is
    good, 0.0 where it exists but is flagged (coiled, touching...), NaN where there is none.
    """
    if units not in UNITS:
        raise ExportError(f"Unknown units {units!r}; use one of {sorted(UNITS)}.")
    sub = subset_tracks(tracks, objects, frames)
    own_fps = float(sub.fps)
    fps = float(fps if fps is not None else own_fps)
    if not np.isfinite(fps) or fps <= 0:
        raise ExportError(f"fps must be a positive number, got {fps}.")
    px = pixel_size if pixel_size is not None else sub.pixel_size
    if px is not None and (not np.isfinite(px) or px <= 0):
        raise ExportError(f"pixel_size must be a positive number (µm/px), got {px}.")
    speed_factor = fps / own_fps if np.isfinite(own_fps) and own_fps > 0 else 1.0
    features = {
        # speeds were computed with the tracks' own fps: follow an fps override
        k: (v * np.float32(speed_factor) if k.endswith("_speed") else v)
        for k, v in sub.features.items()
    }
    sub = replace(sub, fps=fps, pixel_size=None if px is None else float(px), features=features)
    if units == "px":
        scale = 1.0
    elif px is None:
        raise ExportError(
            f"Cannot export in {units}: the pixel size is unknown. Give pixel_size "
            "(micrometres per pixel) or export in pixels (units='px')."
        )
    else:
        scale = float(px) if units == "um" else float(px) / 1000.0

    pts = sub.points.astype(np.float64)
    present = np.isfinite(pts).all(axis=-1)  # (T, K, N)
    good = np.asarray(sub.good, bool)[:, :, None] & present
    conf = np.where(present, 0.0, np.nan)
    conf[good] = 1.0
    if not include_flagged:
        pts = np.where(np.asarray(sub.good, bool)[:, :, None, None], pts, np.nan)
    pts = pts * scale
    return ExportTable(
        tracks=sub,
        points=pts,
        confidence=conf,
        scale=scale,
        units=units,
        fps=fps,
        pixel_size=sub.pixel_size,
        times=np.asarray(sub.frames, np.float64) / fps,
        speed_factor=speed_factor,
    )


#: How each feature scales with the length unit: power of (units per pixel).
_FEATURE_POWER: dict[str, int] = {
    "length": 1,
    "mean_width": 1,
    "area": 2,
    "curvature": -1,
    "centroid_x": 1,
    "centroid_y": 1,
    "centroid_speed": 1,
    "midbody_speed": 1,
}


def feature_unit(name: str, units: str) -> str:
    """Return the unit of feature ``name`` when lengths are in ``units`` (WCON syntax)."""
    power = _FEATURE_POWER.get(name, 0)
    base = {"px": "px", "um": "um", "mm": "mm"}[units]
    if name.endswith("_speed"):
        return f"{base}/s"
    if power == 0:
        return "1"
    if power == 1:
        return base
    if power < 0:
        return f"1/{base}" if power == -1 else f"1/{base}^{-power}"
    return f"{base}^{power}"


def scaled_features(table: ExportTable) -> dict[str, np.ndarray]:
    """Return the tracks' features, (T, K) float64, converted to ``table.units``.

    Features of frames whose coordinates are not exported (flagged frames when
    ``include_flagged`` is False) are kept: they describe the mask, not the skeleton.
    """
    out = {}
    for name, values in table.tracks.features.items():
        power = _FEATURE_POWER.get(name, 0)
        out[name] = np.asarray(values, np.float64) * table.scale**power
    return out

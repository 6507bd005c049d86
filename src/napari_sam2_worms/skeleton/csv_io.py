"""Skeleton CSV: one row per (frame, object, point); lossless round trip to float32.

Columns, in order::

    frame, object, name, point, x, y, width, good, reason,
    <FEATURE_NAMES...>,
    [<feature><unit suffix>...]   only when pixel_size is set, e.g. length_um, area_um2,
                                  curvature_per_um, centroid_speed_um_per_s
    fps, pixel_size, flipped

``point`` 0 is the head. Floats are written with 9 significant digits (exact for
float32); NaN as ``NaN``. ``good`` and ``flipped`` are 0/1. Frame-level values
(good, reason, features, flipped) repeat on each point row. ``fps`` and ``pixel_size``
are constant columns (``pixel_size`` empty when unknown). Missing frames keep their
rows, with NaN coordinates and reason ``missing``: rows are never dropped.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..tracks import FEATURE_NAMES, SkeletonTracks
from ..utils import atomic_path
from .features import feature_units

if TYPE_CHECKING:
    import os

__all__ = ["CsvFormatError", "read_csv", "write_csv"]

BASE_COLUMNS = ("frame", "object", "name", "point", "x", "y", "width", "good", "reason")
TAIL_COLUMNS = ("fps", "pixel_size", "flipped")


class CsvFormatError(ValueError):
    """The file is not a skeleton CSV written by :func:`write_csv`."""


def _fmt(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).ravel()
    out = np.char.mod("%.9g", a).astype(object)
    out[np.isnan(a)] = "NaN"
    return out


def unit_columns(pixel_size: float | None) -> list[tuple[str, str, float]]:
    """(feature, column name, factor) of the micrometre columns."""
    if pixel_size is None:
        return []
    cols = []
    for name in FEATURE_NAMES:
        suffix, power = feature_units(name)
        cols.append((name, name + suffix, float(pixel_size) ** power))
    return cols


def write_csv(tracks: SkeletonTracks, path: str | os.PathLike) -> None:
    """Write ``tracks`` as a skeleton CSV (atomically)."""
    t_n, k_n, n = tracks.points.shape[:3]
    grid = np.meshgrid(np.arange(t_n), np.arange(k_n), np.arange(n), indexing="ij")
    tt, kk, pp = (g.ravel() for g in grid)
    frames = np.asarray(tracks.frames)
    ids = np.asarray(tracks.object_ids)
    names = np.asarray(list(tracks.names), dtype=object)
    flipped = tracks.flipped if tracks.flipped is not None else np.zeros((t_n, k_n), bool)
    cols: list[np.ndarray] = [
        frames[tt].astype(str).astype(object),
        ids[kk].astype(str).astype(object),
        names[kk],
        pp.astype(str).astype(object),
        _fmt(tracks.points[..., 0]),
        _fmt(tracks.points[..., 1]),
        _fmt(tracks.widths),
        np.where(np.asarray(tracks.good)[tt, kk], "1", "0").astype(object),
        np.asarray(tracks.reason, dtype=object)[tt, kk],
    ]
    header = list(BASE_COLUMNS)
    for name in FEATURE_NAMES:
        header.append(name)
        cols.append(_fmt(tracks.features[name][tt, kk]))
    for name, col, factor in unit_columns(tracks.pixel_size):
        header.append(col)
        cols.append(_fmt(tracks.features[name][tt, kk].astype(np.float64) * factor))
    header += list(TAIL_COLUMNS)
    r = len(tt)
    cols.append(np.full(r, repr(float(tracks.fps)), dtype=object))
    ps = "" if tracks.pixel_size is None else repr(float(tracks.pixel_size))
    cols.append(np.full(r, ps, dtype=object))
    cols.append(np.where(flipped[tt, kk], "1", "0").astype(object))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(zip(*cols))


def read_csv(path: str | os.PathLike) -> SkeletonTracks:
    """Read a skeleton CSV written by :func:`write_csv` back into tracks."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise CsvFormatError(f"{path} is empty: not a skeleton CSV") from None
        missing = [c for c in BASE_COLUMNS + FEATURE_NAMES if c not in header]
        if missing:
            raise CsvFormatError(
                f"{path} is not a skeleton CSV (missing columns {missing}); "
                "write it with write_csv / the CSV export"
            )
        rows = list(reader)
    if not rows:
        raise CsvFormatError(f"{path} has a header but no rows")
    col = {c: i for i, c in enumerate(header)}
    data = np.array(rows, dtype=object)

    def get(c: str) -> np.ndarray:
        return data[:, col[c]]

    frame = get("frame").astype(np.int64)
    obj = get("object").astype(np.int64)
    point = get("point").astype(np.int64)
    frames_u = np.unique(frame)
    _, first = np.unique(obj, return_index=True)
    ids = obj[np.sort(first)]
    t_idx = np.searchsorted(frames_u, frame)
    k_of = {int(o): i for i, o in enumerate(ids)}
    k_idx = np.array([k_of[int(o)] for o in obj])
    n = int(point.max()) + 1
    names = [str(get("name")[np.flatnonzero(obj == o)[0]]) for o in ids]
    fps = float(get("fps")[0]) if "fps" in col else 1.0
    ps_s = str(get("pixel_size")[0]) if "pixel_size" in col else ""
    tracks = SkeletonTracks.empty(
        len(frames_u), ids, n, names=names, fps=fps, pixel_size=float(ps_s) if ps_s else None
    )
    tracks.frames = frames_u
    tracks.points[t_idx, k_idx, point, 0] = get("x").astype(np.float64)
    tracks.points[t_idx, k_idx, point, 1] = get("y").astype(np.float64)
    tracks.widths[t_idx, k_idx, point] = get("width").astype(np.float64)
    tracks.good[t_idx, k_idx] = get("good").astype(np.int64) != 0
    tracks.reason[t_idx, k_idx] = get("reason")
    for name in FEATURE_NAMES:
        tracks.features[name][t_idx, k_idx] = get(name).astype(np.float64)
    if "flipped" in col and tracks.flipped is not None:  # empty() makes it
        tracks.flipped[t_idx, k_idx] = get("flipped").astype(np.int64) != 0
    return tracks

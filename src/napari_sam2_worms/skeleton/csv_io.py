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
import itertools
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


#: rows formatted (or parsed) at a time: each cell is a Python string while its chunk is
#: handled, so a whole video's CSV at once (1.6 million strings for 150 frames of 5 worms)
#: made CPython's allocator open ~100 MiB of arenas that a long-running batch worker
#: then kept partly pinned, video after video (docs/performance.md, Batch)
CHUNK_ROWS = 4096


def _header(tracks: SkeletonTracks) -> list[str]:
    header = list(BASE_COLUMNS)
    header += list(FEATURE_NAMES)
    header += [col for _, col, _ in unit_columns(tracks.pixel_size)]
    return header + list(TAIL_COLUMNS)


def _columns(tracks: SkeletonTracks, t0: int, t1: int) -> list[np.ndarray]:
    """Format the cells of frames ``t0 .. t1 - 1`` (array indices), one array per column."""
    k_n, n = tracks.points.shape[1:3]
    grid = np.meshgrid(np.arange(t0, t1), np.arange(k_n), np.arange(n), indexing="ij")
    tt, kk, pp = (g.ravel() for g in grid)
    frames = np.asarray(tracks.frames)
    ids = np.asarray(tracks.object_ids)
    names = np.asarray(list(tracks.names), dtype=object)
    flipped = tracks.flipped if tracks.flipped is not None else np.zeros(tracks.good.shape, bool)
    block = slice(t0, t1)
    cols: list[np.ndarray] = [
        frames[tt].astype(str).astype(object),
        ids[kk].astype(str).astype(object),
        names[kk],
        pp.astype(str).astype(object),
        _fmt(tracks.points[block, ..., 0]),
        _fmt(tracks.points[block, ..., 1]),
        _fmt(tracks.widths[block]),
        np.where(np.asarray(tracks.good)[tt, kk], "1", "0").astype(object),
        np.asarray(tracks.reason, dtype=object)[tt, kk],
    ]
    cols += [_fmt(tracks.features[name][tt, kk]) for name in FEATURE_NAMES]
    for name, _, factor in unit_columns(tracks.pixel_size):
        cols.append(_fmt(tracks.features[name][tt, kk].astype(np.float64) * factor))
    r = len(tt)
    cols.append(np.full(r, repr(float(tracks.fps)), dtype=object))
    ps = "" if tracks.pixel_size is None else repr(float(tracks.pixel_size))
    cols.append(np.full(r, ps, dtype=object))
    cols.append(np.where(flipped[tt, kk], "1", "0").astype(object))
    return cols


def write_csv(tracks: SkeletonTracks, path: str | os.PathLike) -> None:
    """Write ``tracks`` as a skeleton CSV (atomically), :data:`CHUNK_ROWS` rows at a time."""
    t_n, k_n, n = tracks.points.shape[:3]
    step = max(1, CHUNK_ROWS // max(1, k_n * n))  # frames per chunk
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(_header(tracks))
        for t0 in range(0, t_n, step):
            w.writerows(zip(*_columns(tracks, t0, min(t_n, t0 + step))))


_INT_COLUMNS = ("frame", "object", "point", "good")
_FLOAT_COLUMNS = ("x", "y", "width", *FEATURE_NAMES)


def _parse_chunk(rows: list[list[str]], col: dict[str, int], state: dict) -> dict[str, np.ndarray]:
    """Convert ``rows`` to typed columns; ``state`` gathers names, fps, pixel size, reasons."""
    data = np.array(rows, dtype=object)

    def get(c: str) -> np.ndarray:
        return data[:, col[c]]

    out = {c: get(c).astype(np.int64) for c in _INT_COLUMNS}
    out.update({c: get(c).astype(np.float64) for c in _FLOAT_COLUMNS})
    if "flipped" in col:
        out["flipped"] = get("flipped").astype(np.int64) != 0
    canon = state["reasons"]  # one string object per distinct reason, not one per row
    out["reason"] = np.array([canon.setdefault(r, r) for r in get("reason")], dtype=object)
    names = state["names"]
    for o, i in zip(*np.unique(out["object"], return_index=True)):
        names.setdefault(int(o), str(get("name")[i]))
    if "fps" not in state:
        state["fps"] = float(get("fps")[0]) if "fps" in col else 1.0
        state["pixel_size"] = str(get("pixel_size")[0]) if "pixel_size" in col else ""
    return out


def read_csv(path: str | os.PathLike) -> SkeletonTracks:
    """Read a skeleton CSV written by :func:`write_csv` back into tracks.

    The rows are parsed :data:`CHUNK_ROWS` at a time into typed arrays.
    """
    path = Path(path)
    state: dict = {"names": {}, "reasons": {}}
    chunks = []
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
        col = {c: i for i, c in enumerate(header)}
        while rows := list(itertools.islice(reader, CHUNK_ROWS)):
            chunks.append(_parse_chunk(rows, col, state))
    if not chunks:
        raise CsvFormatError(f"{path} has a header but no rows")
    get = {c: np.concatenate([ch[c] for ch in chunks]) for c in chunks[0]}
    del chunks
    frame, obj, point = get["frame"], get["object"], get["point"]
    frames_u = np.unique(frame)
    _, first = np.unique(obj, return_index=True)
    ids = obj[np.sort(first)]
    t_idx = np.searchsorted(frames_u, frame)
    k_of = {int(o): i for i, o in enumerate(ids)}
    k_idx = np.array([k_of[int(o)] for o in obj])
    n = int(point.max()) + 1
    names = [state["names"][int(o)] for o in ids]
    ps_s = state["pixel_size"]
    tracks = SkeletonTracks.empty(
        len(frames_u),
        ids,
        n,
        names=names,
        fps=state["fps"],
        pixel_size=float(ps_s) if ps_s else None,
    )
    tracks.frames = frames_u
    tracks.points[t_idx, k_idx, point, 0] = get["x"]
    tracks.points[t_idx, k_idx, point, 1] = get["y"]
    tracks.widths[t_idx, k_idx, point] = get["width"]
    tracks.good[t_idx, k_idx] = get["good"] != 0
    tracks.reason[t_idx, k_idx] = get["reason"]
    for name in FEATURE_NAMES:
        tracks.features[name][t_idx, k_idx] = get[name]
    if "flipped" in get and tracks.flipped is not None:  # empty() makes it
        tracks.flipped[t_idx, k_idx] = get["flipped"]
    return tracks

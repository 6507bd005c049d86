"""WCON (Worm tracker Commons Object Notation) writer and a small reader.

WCON is JSON (https://github.com/openworm/tracker-commons). We write one data record
per object: ``id`` (the object name), ``t`` (seconds), ``x``/``y`` (per time, the
centerline points head first, relative to the per-frame origin ``ox``/``oy`` = the mean
of the points), ``head: "L"``, and our flags, widths and features in a custom
``@napari-sam2-worms`` block whose units are declared in ``units``. Missing values are
``null`` (JSON has no NaN). ``.wcon.zip`` is a zip archive holding one ``.wcon`` file.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .selection import ExportTable, feature_unit, scaled_features

__all__ = ["FEATURE_ID", "load_wcon_json", "read_wcon", "wcon_document", "write_wcon"]

#: Our custom-feature tag (an ``@`` tag that is clearly not a CGC lab code).
FEATURE_ID = "@napari-sam2-worms"

#: WCON spellings of our coordinate units.
_WCON_UNITS = {"px": "px", "um": "um", "mm": "mm"}


class WconError(ValueError):
    """A file is not WCON this reader understands."""


def _decimals(scale: float) -> int:
    """Decimals that keep 1/1000 pixel of precision at ``scale`` units per pixel."""
    return max(3, 3 - math.floor(math.log10(scale))) if scale > 0 else 3


def _nullable(values: np.ndarray, decimals: int) -> list:
    """Nested lists of rounded floats, ``None`` where not finite."""
    arr = np.round(np.asarray(values, dtype=np.float64), decimals)
    obj = arr.astype(object)
    obj[~np.isfinite(arr)] = None
    return obj.tolist()


def wcon_document(table: ExportTable, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Make the WCON document (a JSON-ready dict) of an export table.

    Parameters
    ----------
    table : prepared tracks; their ``units`` become the WCON length unit.
    metadata : extra WCON ``metadata`` entries (e.g. ``{"lab": {"name": ...}}``).
    """
    tr = table.tracks
    unit = _WCON_UNITS[table.units]
    dec = _decimals(table.scale)
    feats = scaled_features(table)
    units: dict[str, str] = {"t": "s", "x": unit, "y": unit, "ox": unit, "oy": unit}
    units["width"] = unit
    for name in feats:
        units[name] = feature_unit(name, table.units)
    meta: dict[str, Any] = {
        "software": {
            "name": "napari-sam2-worms",
            "version": __version__,
            "featureID": FEATURE_ID,
        }
    }
    if metadata:
        meta.update(metadata)
    times = _nullable(table.times, 6)
    records = []
    for k, name in enumerate(tr.names):
        pts = table.points[:, k]  # (T, N, 2)
        has = np.isfinite(pts).all(axis=-1).any(axis=-1)
        origin = np.full((len(pts), 2), np.nan)
        if has.any():
            origin[has] = np.round(np.nanmean(pts[has], axis=1), dec)
        rel = pts - origin[:, None, :]
        custom: dict[str, Any] = {
            "object_id": int(tr.object_ids[k]),
            "frame": np.asarray(tr.frames, dtype=int).tolist(),
            "good": np.asarray(tr.good[:, k], bool).tolist(),
            "reason": [str(r) for r in tr.reason[:, k]],
            "width": _nullable(np.asarray(tr.widths[:, k], np.float64) * table.scale, dec),
        }
        for fname, values in feats.items():
            custom[fname] = _nullable(values[:, k], 6)
        records.append(
            {
                "id": str(name),
                "t": times,
                "x": _nullable(rel[..., 0], dec),
                "y": _nullable(rel[..., 1], dec),
                "ox": _nullable(origin[:, 0], dec),
                "oy": _nullable(origin[:, 1], dec),
                "head": "L",
                FEATURE_ID: custom,
            }
        )
    top: dict[str, Any] = {
        "fps": table.fps,
        "pixel_size_um": table.pixel_size,
        "keypoint_order": "head first",
        "n_points": int(tr.n_points),
        "coordinates": (
            "(x, y) = (column, row) of the video frame; pixel centres are at integer "
            "coordinates: (0, 0) is the centre of the top-left pixel, whose top-left corner "
            "is at (-0.5, -0.5) pixel"
        ),
        "missing": "null where there is no good skeleton; see good/reason per frame",
    }
    return {"units": units, "metadata": meta, FEATURE_ID: top, "data": records}


def write_wcon(
    table: ExportTable,
    tmp: Path,
    *,
    zipped: bool = False,
    metadata: dict[str, Any] | None = None,
    inner_name: str = "tracks.wcon",
) -> None:
    """Write ``table`` as WCON to ``tmp`` (a zip holding ``inner_name`` if ``zipped``).

    One top-level entry and one data record per line: readable and compact.
    """
    doc = wcon_document(table, metadata)
    parts = [
        f" {json.dumps(k)}: {json.dumps(v, allow_nan=False)}" for k, v in doc.items() if k != "data"
    ]
    records = [json.dumps(r, separators=(",", ":"), allow_nan=False) for r in doc["data"]]
    parts.append(' "data": [\n  ' + ",\n  ".join(records) + "\n ]")
    text = "{\n" + ",\n".join(parts) + "\n}\n"
    if zipped:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(inner_name, text)
    else:
        Path(tmp).write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- reader


def load_wcon_json(path: str | Path) -> dict[str, Any]:
    """Read the JSON object of a ``.wcon``/``.json`` file or of the WCON file in a ``.zip``."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                if not names:
                    raise WconError(f"{path} is an empty zip archive: no WCON file in it.")
                wcon = [n for n in names if n.lower().endswith((".wcon", ".json"))]
                text = zf.read((wcon or names)[0]).decode("utf-8")
        else:
            text = path.read_text(encoding="utf-8")
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise WconError(f"{path} is not a WCON (JSON) file: {exc}") from exc
    if not isinstance(doc, dict) or "data" not in doc or "units" not in doc:
        raise WconError(f"{path} is not WCON: it needs 'units' and 'data' at the top level.")
    return doc


def _num(v: Any) -> float:
    return np.nan if v is None else float(v)


def _per_time_points(v: Any, n_t: int) -> list[np.ndarray]:
    """X or y of one record as one 1-D array per time."""
    if not isinstance(v, list):
        return [np.array([_num(v)])] * n_t
    if any(isinstance(e, list) for e in v):
        if len(v) != n_t:
            raise WconError(f"x/y has {len(v)} arrays for {n_t} times.")
        return [np.array([_num(a) for a in (e if isinstance(e, list) else [e])]) for e in v]
    flat = np.array([_num(e) for e in v])
    if n_t == 1:
        return [flat]  # one time: the array is the spine
    if len(flat) == n_t:
        return [flat[i : i + 1] for i in range(n_t)]  # one point per time
    raise WconError(f"x/y has {len(flat)} values for {n_t} times.")


def _per_time_scalar(v: Any, n_t: int, default: float) -> np.ndarray:
    if v is None:
        return np.full(n_t, default)
    if isinstance(v, list):
        arr = np.array([default if e is None else float(e) for e in v])
        if len(arr) == 1:
            return np.full(n_t, arr[0])
        if len(arr) != n_t:
            raise WconError(f"an origin array has {len(arr)} values for {n_t} times.")
        return arr
    return np.full(n_t, float(v))


def _per_time_head(v: Any, n_t: int) -> list[bool]:
    """Tell where the head is the last point ("R"; the spec examples also write "right")."""
    vals = v if isinstance(v, list) else [v] * n_t
    return [str(h).lower() in ("r", "right") for h in vals]


def read_wcon(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the centerlines of a WCON file (``.wcon``, ``.json`` or ``.zip``).

    Follows the Tracker Commons reference readers: ``x``/``y`` are shifted by ``ox``/``oy``
    when present (a centroid ``cx``/``cy`` alone does not move them); points are put
    head first where ``head`` is ``"R"``; records of the same ``id`` are joined and
    sorted by time (a repeated time keeps its first record). Values stay in the file's
    units (see ``load_wcon_json(path)["units"]``).

    Returns
    -------
    dict id -> (t, points): ``t`` (T,) float, ``points`` (T, N, 2) float (x, y),
    NaN where ``null`` or where a time has fewer points than the longest.
    """
    doc = load_wcon_json(path)
    data = doc["data"]
    records = [data] if isinstance(data, dict) else list(data)
    per_id: dict[str, list[tuple[float, np.ndarray]]] = {}
    for rec in records:
        if not isinstance(rec, dict) or not {"id", "t", "x", "y"} <= rec.keys():
            continue  # not a time series record: ignored, as the spec asks
        t = np.atleast_1d(np.array([_num(v) for v in np.atleast_1d(rec["t"]).tolist()]))
        n_t = len(t)
        xs = _per_time_points(rec["x"], n_t)
        ys = _per_time_points(rec["y"], n_t)
        ox = _per_time_scalar(rec.get("ox"), n_t, 0.0)
        oy = _per_time_scalar(rec.get("oy"), n_t, 0.0)
        flip = _per_time_head(rec.get("head"), n_t)
        out = per_id.setdefault(str(rec["id"]), [])
        for i in range(n_t):
            if len(xs[i]) != len(ys[i]):
                raise WconError(f"x and y differ in length at t={t[i]} for id {rec['id']}.")
            pts = np.stack([xs[i] + ox[i], ys[i] + oy[i]], axis=-1)
            out.append((float(t[i]), pts[::-1] if flip[i] else pts))
    result = {}
    for wid, items in per_id.items():
        seen: dict[float, np.ndarray] = {}
        for ti, pts in items:
            seen.setdefault(ti, pts)
        times = np.array(sorted(seen))
        n = max(len(p) for p in seen.values())
        pts = np.full((len(times), n, 2), np.nan)
        for i, ti in enumerate(times):
            pts[i, : len(seen[ti])] = seen[ti]
        result[wid] = (times, pts)
    return result

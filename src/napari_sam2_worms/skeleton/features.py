"""Per-frame worm features (names from :data:`napari_sam2_worms.tracks.FEATURE_NAMES`).

Units are pixels and seconds; :func:`feature_units` gives the micrometre conversion used
by the exporters when ``pixel_size`` (µm per pixel) is known.

- ``length``: arc length of the centerline (px).
- ``mean_width``: mean of the width profile (px).
- ``area``: mask area (px²) when the skeletonizer saw the mask; otherwise the integral
  of the width along the centerline.
- ``curvature``: mean absolute curvature along the body (1/px): turning angle between
  consecutive segments divided by the mean segment length, over the interior points.
- ``centroid_x``, ``centroid_y``: mask centroid (px) (mean of the centerline points when
  no mask was seen).
- ``centroid_speed``: speed of the centroid (px/s, >= 0), central differences over the
  neighbouring frames that have a centroid.
- ``midbody_speed``: signed speed of the midbody point (px/s): positive when it moves
  towards the head (forward), negative backwards.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..tracks import FEATURE_NAMES, SkeletonTracks

__all__ = ["compute_features", "feature_units", "shape_features"]


def feature_units(name: str) -> tuple[str, float]:
    """(suffix, power of the pixel size) to convert feature ``name`` to micrometres."""
    return {
        "length": ("_um", 1),
        "mean_width": ("_um", 1),
        "area": ("_um2", 2),
        "curvature": ("_per_um", -1),
        "centroid_x": ("_um", 1),
        "centroid_y": ("_um", 1),
        "centroid_speed": ("_um_per_s", 1),
        "midbody_speed": ("_um_per_s", 1),
    }[name]


def shape_features(points: np.ndarray, widths: np.ndarray) -> dict[str, np.ndarray]:
    """Length, mean width, width-integral area, curvature for (..., N, 2) points."""
    d = np.diff(points.astype(np.float64), axis=-2)
    seg = np.hypot(d[..., 0], d[..., 1])
    length = seg.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ang = np.arctan2(d[..., 1], d[..., 0])
        turn = np.angle(np.exp(1j * np.diff(ang, axis=-1)))
        ds = 0.5 * (seg[..., 1:] + seg[..., :-1])
        curv = np.mean(np.abs(turn) / np.where(ds > 0, ds, np.nan), axis=-1)
        w = widths.astype(np.float64)
        mean_w = np.mean(w, axis=-1)
        area = (0.5 * (w[..., 1:] + w[..., :-1]) * seg).sum(axis=-1)
    return {"length": length, "mean_width": mean_w, "area": area, "curvature": curv}


def _speed(xy: np.ndarray, frames: np.ndarray, fps: float) -> np.ndarray:
    """Compute (T, 2) -> (T, 2) velocity in px/s by central differences.

    Over valid neighbours at most 2 frames away; NaN where no neighbour.
    """
    t_n = len(xy)
    v = np.full((t_n, 2), np.nan)
    if t_n < 2:
        return v
    ok = np.isfinite(xy).all(axis=1)
    f = frames.astype(float)
    near = np.diff(f) <= 2
    t = np.arange(t_n)
    a = t.copy()
    a[1:] = np.where(ok[:-1] & near, t[1:] - 1, t[1:])
    b = t.copy()
    b[:-1] = np.where(ok[1:] & near, t[:-1] + 1, t[:-1])
    use = ok & (a != b)
    a, b = a[use], b[use]
    v[use] = (xy[b] - xy[a]) / (f[b] - f[a])[:, None] * fps
    return v


def compute_features(tracks: SkeletonTracks) -> None:
    """Fill ``tracks.features`` (every name of FEATURE_NAMES, (T, K) float32) in place.

    ``area`` and ``centroid_x/y`` already present and finite (set by the skeletonizer
    from the masks) are kept; elsewhere they are derived from the centerline.
    """
    t_n, k_n, n = tracks.points.shape[:3]
    feats = {k: np.asarray(v, np.float32) for k, v in (tracks.features or {}).items()}
    shp = shape_features(tracks.points, tracks.widths)
    have = np.isfinite(tracks.points).all(axis=(2, 3))
    out: dict[str, np.ndarray] = {}
    for name in ("length", "mean_width", "curvature"):
        out[name] = np.where(have, shp[name], np.nan)
    mask_area = feats.get("area")
    out["area"] = np.where(
        np.isfinite(mask_area) if mask_area is not None else False,
        mask_area if mask_area is not None else np.nan,
        np.where(have, shp["area"], np.nan),
    )
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: frames without a track
        mean_pt = (
            np.nanmean(tracks.points, axis=2) if have.any() else np.full((t_n, k_n, 2), np.nan)
        )
    for i, name in enumerate(("centroid_x", "centroid_y")):
        given = feats.get(name)
        base = np.where(have, mean_pt[..., i], np.nan)
        out[name] = base if given is None else np.where(np.isfinite(given), given, base)
    cs = np.full((t_n, k_n), np.nan)
    ms = np.full((t_n, k_n), np.nan)
    frames = np.asarray(tracks.frames)
    for k in range(k_n):
        c = np.stack([out["centroid_x"][:, k], out["centroid_y"][:, k]], axis=1)
        vc = _speed(c, frames, tracks.fps)
        cs[:, k] = np.hypot(vc[:, 0], vc[:, 1])
        mid = tracks.points[:, k, n // 2].astype(float)
        vm = _speed(mid, frames, tracks.fps)
        axis = tracks.points[:, k, : max(n // 5, 1)].mean(axis=1) - mid
        norm = np.hypot(axis[:, 0], axis[:, 1])
        with np.errstate(invalid="ignore", divide="ignore"):
            sign = np.sign((vm * axis).sum(axis=1) / norm)
        ms[:, k] = np.hypot(vm[:, 0], vm[:, 1]) * np.where(sign == 0, 1.0, sign)
    out["centroid_speed"] = cs
    out["midbody_speed"] = ms
    tracks.features = {name: np.asarray(out[name], np.float32) for name in FEATURE_NAMES}
    for name, arr in feats.items():  # keep any extra user feature
        if name not in tracks.features:
            tracks.features[name] = arr

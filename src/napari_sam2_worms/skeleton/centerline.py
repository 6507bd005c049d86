"""One binary mask -> an ordered, smooth, tip-to-tip centerline with a width profile.

Method (per mask, in its bounding-box crop):

1. fill small holes, smooth the boundary (Gaussian of the mask, threshold 0.5), keep
   the largest component;
2. skeletonize (scikit-image) and take the skeleton's longest geodesic path
   (Dijkstra twice on the 8-connected pixel graph), which ignores spurs;
3. smooth the path, drop its last ~half-width at each end (where the skeleton bends
   into the corners of the tips) and extend each end along its direction up to the
   smoothed boundary (sub-pixel, bilinear), so the line reaches the tips;
4. resample to N points evenly spaced along arc length; widths are twice the distance
   transform at the points.

Coiled / self-touching masks (the path is much shorter than area / width, or the
skeleton has loops) are fitted from the previous frame's centerline when given
(``prev``), otherwise the longest path is returned; either way ``good`` is False and
``reason`` is ``"coiled"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["MaskSkeleton", "naive_centerline", "resample", "skeletonize_mask"]

#: Masks with fewer pixels than this are flagged "small".
MIN_AREA = 12
# Tuned on the synthetic plate and the WormPose sample (docs/skeletons.md):
_TIP_SIGMA = 0.25  # tips: 0.5 level of the mask blurred by this x half-width
_TRIM = 1.0  # path ends dropped before extending to the tips, x half-width
_COIL_RATIO = 0.75  # coiled when path + tips < this x (area / width)
_FIT_STEPS = 3  # distance-transform steps after sliding the previous shape
_DIRK = 4  # end direction from the last this-many path points
_OFFS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
_WEIGHTS = [float(np.hypot(dr, dc)) for dr, dc in _OFFS]
_EIGHT = np.ones((3, 3), bool)


@dataclass
class MaskSkeleton:
    """The centerline of one mask.

    Attributes
    ----------
    points : (N, 2) float32 (x, y) in the mask's frame, first point = one tip; NaN if none.
    widths : (N,) float32 body width at each point (pixels).
    length : arc length of the centerline (pixels).
    good : whether the centerline is trustworthy.
    reason : why not ("" when good): "missing", "small", "coiled".
    area : mask area in pixels.
    centroid : (x, y) of the mask.
    """

    points: np.ndarray
    widths: np.ndarray
    length: float
    good: bool
    reason: str
    area: float = 0.0
    centroid: tuple[float, float] = (np.nan, np.nan)


def _empty(n: int, reason: str, area: float = 0.0, centroid=(np.nan, np.nan)) -> MaskSkeleton:
    return MaskSkeleton(
        np.full((n, 2), np.nan, np.float32),
        np.full(n, np.nan, np.float32),
        float("nan"),
        False,
        reason,
        float(area),
        centroid,
    )


def resample(path: np.ndarray, n: int) -> np.ndarray:
    """Resample a polyline (M, 2) to ``n`` points evenly spaced along its arc length."""
    path = np.asarray(path, float)
    seg = np.hypot(*np.diff(path, axis=0).T)
    keep = np.concatenate([[True], seg > 1e-9])
    path = path[keep]
    if len(path) < 2:
        return np.repeat(path[:1], n, axis=0)
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(path, axis=0).T))])
    u = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(u, s, path[:, 0]), np.interp(u, s, path[:, 1])], axis=1)


def _arc(p: np.ndarray) -> float:
    return float(np.hypot(*np.diff(p, axis=0).T).sum())


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear sample of ``img`` at (x, y) (0 outside)."""
    return ndimage.map_coordinates(img, [y, x], order=1, mode="constant", cval=0.0)


def _farthest(nbrs: list[list[int]], wts: list[list[float]], start: int):
    """Weighted BFS from ``start`` (exact on trees): (farthest node, parents)."""
    dist = {start: 0.0}
    parent = {start: -1}
    queue = [start]
    best, best_d = start, 0.0
    for u in queue:
        du = dist[u]
        for v, w in zip(nbrs[u], wts[u]):
            if v not in dist:
                dv = du + w
                dist[v] = dv
                parent[v] = u
                queue.append(v)
                if dv > best_d:
                    best, best_d = v, dv
    return best, parent


def _longest_path(skel: np.ndarray) -> tuple[np.ndarray, bool]:
    """Find the longest geodesic path of a skeleton image as (M, 2) (row, col).

    Two weighted BFS passes find the tree diameter; also returns whether the skeleton
    has loops.
    """
    rr, cc = np.nonzero(skel)
    m = len(rr)
    if m == 0:
        return np.zeros((0, 2)), False
    if m == 1:
        return np.array([[rr[0], cc[0]]], float), False
    h, w = skel.shape
    index = np.full((h + 2, w + 2), -1, np.int64)
    index[rr + 1, cc + 1] = np.arange(m)
    nb = np.stack([index[rr + 1 + dr, cc + 1 + dc] for dr, dc in _OFFS], axis=1)
    ok = nb >= 0
    deg = ok.sum(axis=1)
    nb_l = nb.tolist()
    ok_l = ok.tolist()
    nbrs = [[v for v, o in zip(row, oks) if o] for row, oks in zip(nb_l, ok_l)]
    wts = [[_WEIGHTS[j] for j, o in enumerate(oks) if o] for oks in ok_l]
    n_edges = int(deg.sum()) // 2
    ends = np.flatnonzero(deg == 1)
    start = int(ends[0]) if len(ends) else 0
    a, _ = _farthest(nbrs, wts, start)
    b, parent = _farthest(nbrs, wts, a)
    chain = [b]
    while parent[chain[-1]] >= 0:
        chain.append(parent[chain[-1]])
    path = np.array(chain[::-1])
    # corner triangles of an 8-connected line add about one extra edge per corner;
    # a real loop adds many more than the endpoints-count allows
    loops = n_edges > m - 1 + int((deg >= 3).sum())
    return np.stack([rr[path], cc[path]], axis=1).astype(float), loops


def _smooth_path(p: np.ndarray, sigma: float) -> np.ndarray:
    if len(p) < 3 or sigma <= 0:
        return p
    return ndimage.gaussian_filter1d(p, sigma, axis=0, mode="nearest")


def _extend(
    p: np.ndarray, soft: np.ndarray, step: float = 0.25, max_len: float = 1e9
) -> np.ndarray:
    """Extend the head end of ``p`` (point 0) along its direction to the 0.5 level of ``soft``."""
    k = min(len(p) - 1, _DIRK)
    if k < 1:
        return p
    d = p[0] - p[k]
    nd = np.hypot(*d)
    if nd < 1e-9:
        return p
    d = d / nd
    n_steps = int(min(max_len, soft.shape[0] + soft.shape[1]) / step) + 2
    t = np.arange(1, n_steps) * step
    xs = p[0, 0] + d[0] * t
    ys = p[0, 1] + d[1] * t
    vals = _bilinear(soft, xs, ys)
    out = np.flatnonzero(vals < 0.5)
    if len(out) == 0:
        return p
    i = out[0]
    if i == 0:
        return p
    # linear interpolation of the crossing between step i-1 and i
    v0, v1 = vals[i - 1], vals[i]
    f = (v0 - 0.5) / max(v0 - v1, 1e-9)
    tip = p[0] + d * (t[i - 1] + f * step)
    return np.vstack([tip, p])


def _prepare(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Crop-level cleaning: fill small holes, keep the largest component, smooth.

    ``mask`` must have an empty border. Returns the cleaned boolean mask, the smoothed
    float mask (0..1) and whether a large hole (a loop of a coiled worm) remains.
    """
    m = mask.astype(bool)
    lab, n = ndimage.label(m, structure=_EIGHT)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        m = lab == int(np.argmax(sizes))
    # holes: background components (4-connected) other than the outside one
    bg, nb = ndimage.label(~m)
    has_hole = False
    if nb > 1:
        sizes = np.bincount(bg.ravel())
        outside = bg[0, 0]
        perim = float((m & ~ndimage.binary_erosion(m)).sum())
        width = max(1.0, 2.0 * m.sum() / max(perim, 1.0))
        # a hole bigger than a quarter body width² is a loop of a coiled worm: keep it
        small = sizes <= max(2.0, 0.25 * width * width)
        small[0] = False
        small[outside] = False
        m = m | small[bg]
        big = sizes > max(2.0, 0.25 * width * width)
        big[0] = False
        big[outside] = False
        has_hole = bool(big.any())
    soft = ndimage.gaussian_filter(m.astype(np.float32), 1.0)
    return m, soft, has_hole


def _arc_extension(p: np.ndarray, ext: float, n_ext: int = 8) -> np.ndarray:
    """Continue ``p`` beyond ``p[0]`` for ``ext`` pixels with the end's own curvature.

    Worms' heads keep turning the way they turn. Returns the points, nearest first.
    """
    k = max(3, len(p) // 5)
    k = min(k, len(p) - 1)
    d = -np.diff(p[: k + 1], axis=0)  # pointing towards p[0]
    ang = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    seg = np.hypot(d[:, 0], d[:, 1])
    # turning per pixel near the end, moving outwards (from p[k] to p[0])
    kappa = 0.0
    if len(ang) > 1 and seg.sum() > 1e-9:
        kappa = float((ang[0] - ang[-1]) / max(seg[1:].sum(), 1e-9))
    step = ext / n_ext
    theta = ang[0] + kappa * step * np.arange(1, n_ext + 1)
    out = p[0] + np.cumsum(step * np.stack([np.cos(theta), np.sin(theta)], axis=1), axis=0)
    return out


def _fit_prev(prev: np.ndarray, soft: np.ndarray, dist: np.ndarray, n: int) -> np.ndarray:
    """Fit the previous frame's centerline (crop coords) to a coiled mask.

    Worms move along their own body: the previous centerline, extended at both ends with
    its own end curvature, is slid along its arc; the shift that best explains the mask
    (mask pixels near the body minus body points outside the mask) wins.
    A few small steps up the distance transform then follow the bending body.
    """
    p = resample(prev.astype(float), n)
    length = _arc(p)
    if length < 1e-6:
        return p
    ext = 0.25 * length
    head = _arc_extension(p, ext)
    tail = _arc_extension(p[::-1], ext)
    poly = np.vstack([head[::-1], p, tail])
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(poly, axis=0).T))]) - ext
    base = np.linspace(0.0, length, n)
    shifts = np.linspace(-ext, ext, 13)
    uu = (shifts[:, None] + base[None]).ravel()
    cand = np.stack([np.interp(uu, s, poly[:, 0]), np.interp(uu, s, poly[:, 1])], axis=1)
    cand = cand.reshape(len(shifts), n, 2)
    # score: mask pixels explained by the body tube minus points lying outside the mask
    outside = (_bilinear(soft, cand[..., 0].ravel(), cand[..., 1].ravel()) < 0.5).reshape(
        len(shifts), n
    )
    yy, xx = np.nonzero(soft >= 0.5)
    sub = max(1, len(yy) // 150)
    pix = np.stack([xx[::sub], yy[::sub]], axis=1).astype(np.float32)
    half = float(np.median(dist[dist > 0])) if (dist > 0).any() else 1.0
    d2 = ((pix[None, :, None, :] - cand[:, None, :, :].astype(np.float32)) ** 2).sum(-1)
    if pix.shape[0]:
        covered = (d2.min(axis=2) <= (half + 1.5) ** 2).mean(axis=1)
    else:  # no pixel at or above 0.5 (a faint mask): score on the outside term alone
        covered = np.zeros(len(shifts))
    score = covered - outside.mean(axis=1) - 1e-4 * np.abs(shifts)
    best = cand[int(np.argmax(score))]
    gy, gx = (np.asarray(g) for g in np.gradient(dist.astype(np.float32)))
    for _ in range(_FIT_STEPS):
        sx = _bilinear(gx, best[:, 0], best[:, 1])
        sy = _bilinear(gy, best[:, 0], best[:, 1])
        best = best + 0.5 * np.stack([sx, sy], axis=1)
        best = resample(_smooth_path(best, 1.0), n)
    return best


def skeletonize_mask(
    mask: np.ndarray, n_points: int = 49, prev: np.ndarray | None = None
) -> MaskSkeleton:
    """Centerline of one binary mask.

    Parameters
    ----------
    mask : (H, W) bool / int array (non-zero = object).
    n_points : number of points of the centerline.
    prev : optional (n_points, 2) centerline of the previous frame (x, y, same frame of
        reference as ``mask``): used to fit coiled shapes and to orient the result
        (the returned points then start at the end closest to ``prev[0]``).

    Returns
    -------
    MaskSkeleton
        points in the mask's coordinates (x = column), evenly spaced along arc length.
    """
    if n_points < 2:
        raise ValueError("n_points must be at least 2")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"skeletonize_mask needs a 2-D mask, got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return _empty(n_points, "missing")
    cols = np.flatnonzero(mask.any(axis=0))
    pad = 3
    r0, c0 = rows[0] - pad, cols[0] - pad
    crop = np.zeros((rows[-1] - rows[0] + 1 + 2 * pad, cols[-1] - cols[0] + 1 + 2 * pad), bool)
    crop[pad:-pad, pad:-pad] = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] != 0
    area = float(crop.sum())
    yy, xx = np.nonzero(crop)
    centroid = (float(xx.mean() + c0), float(yy.mean() + r0))
    if area < MIN_AREA:
        return _empty(n_points, "small", area, centroid)
    from skimage.morphology import skeletonize

    m, soft, has_hole = _prepare(crop)
    dist = ndimage.distance_transform_edt(soft >= 0.5)
    skel = skeletonize(soft >= 0.5)
    if not skel.any():
        skel = skeletonize(m)
    if not skel.any():
        return _empty(n_points, "small", area, centroid)
    path_rc, loops = _longest_path(skel)
    path = path_rc[:, ::-1].copy()  # (x, y)
    half = float(np.median(dist[skel])) if skel.any() else 1.0
    width_est = max(2.0 * half, 1.0)
    est_length = area / width_est
    plen = _arc(path)
    coiled = loops or has_hole or (plen + 2 * half) < _COIL_RATIO * est_length
    offset = np.array([c0, r0], float)
    prev_c = None if prev is None else np.asarray(prev, float) - offset
    if prev_c is not None and not np.isfinite(prev_c).all():
        prev_c = None

    if coiled and prev_c is not None and len(prev_c) >= 2:
        pts = _fit_prev(prev_c, soft, dist, n_points)
    elif len(path) < 2:
        return _empty(n_points, "small", area, centroid)
    else:
        sm = _smooth_path(path, min(2.0, len(path) / 8))
        trim = int(min(max(round(_TRIM * half), 1), max((len(sm) - 2) // 4, 0)))
        if trim and len(sm) > 2 * trim + 2:
            sm = sm[trim : len(sm) - trim]
        tgt = (
            ndimage.gaussian_filter(m.astype(np.float32), _TIP_SIGMA * half)
            if _TIP_SIGMA
            else m.astype(np.float32)
        )
        sm = _extend(sm, tgt)
        sm = _extend(sm[::-1], tgt)[::-1]
        pts = resample(sm, max(n_points * 2, 64))
        pts = _smooth_path(pts, 1.0)
        # re-pin the tips (smoothing shortens the ends slightly)
        pts[0], pts[-1] = sm[0], sm[-1]
        pts = resample(pts, n_points)

    if prev_c is not None and len(prev_c) == n_points:
        same = np.nanmean(np.hypot(*(pts - prev_c).T))
        rev = np.nanmean(np.hypot(*(pts[::-1] - prev_c).T))
        if rev < same:
            pts = pts[::-1].copy()
    widths = 2.0 * _bilinear(dist.astype(np.float32), pts[:, 0], pts[:, 1])
    length = _arc(pts)
    pts = pts + offset
    return MaskSkeleton(
        pts.astype(np.float32),
        widths.astype(np.float32),
        float(length),
        not coiled,
        "coiled" if coiled else "",
        area,
        centroid,
    )


def naive_centerline(mask: np.ndarray, n_points: int = 49) -> np.ndarray | None:
    """Skeletonize by the naive reference method: skimage skeletonize, longest path, resampled.

    Returns (n_points, 2) (x, y) or None when the mask has no skeleton.
    """
    from skimage.morphology import skeletonize

    skel = skeletonize(np.asarray(mask) != 0)
    if not skel.any():
        return None
    path_rc, _ = _longest_path(skel)
    if len(path_rc) < 2:
        return None
    return resample(path_rc[:, ::-1], n_points)

"""A worm's body as a centerline with radii, and its crawling motion, for splitting merges.

While two worms touch or cross, the classic backend predicts each worm's body from its
last unmerged mask by the way worms crawl: the body slides along its own centerline
(every body point moves to where the point ahead of it was), and the leading end
continues straight along its tangent. The predicted tube tells which pixels of the
merged blob belong to which worm (see :func:`.split.split_blob`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from .region import Region

__all__ = ["Body", "body_of"]

_OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


@dataclass
class Body:
    """Centerline points (N, 2) as (x, y), 1 px apart, trailing end first, and radii (N,)."""

    points: np.ndarray
    radii: np.ndarray

    def slid(self, distance: float) -> Body:
        """Return the body after crawling ``distance`` pixels forward (leading end = last point)."""
        s = round(distance)
        if s <= 0 or len(self.points) < 3:
            return self
        tail = self.points[-min(6, len(self.points)) :]
        d = tail[-1] - tail[0]
        n = float(np.hypot(*d))
        step = d / n if n > 0 else np.zeros(2)
        ext = self.points[-1] + step * np.arange(1, s + 1)[:, None]
        path = np.concatenate([self.points, ext])
        return Body(path[s:], self.radii)

    def render(self, shape: tuple[int, int]) -> Region:
        """Draw the tube around the centerline, clipped to a frame of ``shape`` (H, W)."""
        r = float(self.radii.max()) + 2
        x0 = max(int(np.floor(self.points[:, 0].min() - r)), 0)
        y0 = max(int(np.floor(self.points[:, 1].min() - r)), 0)
        x1 = min(int(np.ceil(self.points[:, 0].max() + r)) + 1, shape[1])
        y1 = min(int(np.ceil(self.points[:, 1].max() + r)) + 1, shape[0])
        if x1 <= x0 or y1 <= y0:
            return Region(0, 0, np.zeros((0, 0), bool))
        seeds = np.ones((y1 - y0, x1 - x0), bool)
        idx = np.full(seeds.shape, -1, np.int64)
        cols = np.round(self.points[:, 0]).astype(int) - x0
        rows = np.round(self.points[:, 1]).astype(int) - y0
        ok = (rows >= 0) & (rows < seeds.shape[0]) & (cols >= 0) & (cols < seeds.shape[1])
        if not ok.any():
            return Region(0, 0, np.zeros((0, 0), bool))
        seeds[rows[ok], cols[ok]] = False
        idx[rows[ok], cols[ok]] = np.flatnonzero(ok)
        dist, (ir, ic) = ndimage.distance_transform_edt(seeds, return_indices=True)
        radius = self.radii[idx[ir, ic]]
        return Region(y0, x0, dist <= radius + 0.5).tight()


def _longest_path(skel: np.ndarray) -> np.ndarray:
    """(row, col) pixels of the longest shortest-path in a skeleton image."""
    rr, cc = np.nonzero(skel)
    n = rr.size
    if n < 2:
        return np.stack([rr, cc], 1)
    index = -np.ones(skel.shape, np.int64)
    index[rr, cc] = np.arange(n)
    pad = np.pad(index, 1, constant_values=-1)
    src, dst, w = [], [], []
    for dr, dc in _OFFSETS:
        nb = pad[rr + 1 + dr, cc + 1 + dc]
        ok = nb >= 0
        src.append(np.flatnonzero(ok))
        dst.append(nb[ok])
        w.append(np.full(int(ok.sum()), np.hypot(dr, dc)))
    graph = coo_matrix(
        (np.concatenate(w), (np.concatenate(src), np.concatenate(dst))), shape=(n, n)
    ).tocsr()
    d0 = dijkstra(graph, indices=0)
    a = int(np.argmax(np.where(np.isfinite(d0), d0, -1)))
    da, pred = dijkstra(graph, indices=a, return_predecessors=True)
    b = int(np.argmax(np.where(np.isfinite(da), da, -1)))
    path = [b]
    while path[-1] != a and pred[path[-1]] >= 0:
        path.append(int(pred[path[-1]]))
    order = np.array(path[::-1])
    return np.stack([rr[order], cc[order]], 1)


def body_of(region: Region, velocity: tuple[float, float]) -> Body | None:
    """Return the centerline body of a mask, its leading end (along ``velocity``) last.

    Returns None for masks too small or blob-like to have a centerline.
    """
    from skimage.morphology import skeletonize

    if region.empty:
        return None
    crop = np.pad(region.crop, 1)
    skel = skeletonize(crop)
    path = _longest_path(skel)
    if len(path) < 4:
        return None
    depth = ndimage.distance_transform_edt(crop)
    xy = np.stack([path[:, 1] + region.x0 - 1, path[:, 0] + region.y0 - 1], 1).astype(float)
    rad = depth[path[:, 0], path[:, 1]]
    # extend both ends to the mask's tips (the skeleton stops a radius short)
    seg = np.hypot(*np.diff(xy, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    grid = np.arange(0.0, s[-1] + 1e-9, 1.0)
    pts = np.stack([np.interp(grid, s, xy[:, 0]), np.interp(grid, s, xy[:, 1])], 1)
    rad = np.interp(grid, s, ndimage.uniform_filter1d(rad, 5, mode="nearest"))
    cx, cy = region.centroid()
    v = np.asarray(velocity, float)
    if np.dot(pts[0] - (cx, cy), v) > np.dot(pts[-1] - (cx, cy), v):
        pts, rad = pts[::-1], rad[::-1]
    body = Body(pts, np.maximum(rad, 1.0))
    return body

"""The one place where napari's (row, col) = (y, x) meets our (x, y).

napari layers store coordinates as (..., row, col); every file and API of this
package uses (x, y) with x = column. Convert only with these functions.
"""

from __future__ import annotations

import numpy as np


def napari_to_xy(rc: np.ndarray) -> np.ndarray:
    """(..., row, col) -> (..., x, y): the last two columns swapped (copies)."""
    rc = np.asarray(rc, dtype=float)
    return rc[..., ::-1].copy() if rc.shape[-1] == 2 else rc[..., [-1, -2]].copy()


def xy_to_napari(xy: np.ndarray) -> np.ndarray:
    """(..., x, y) -> (..., row, col)."""
    xy = np.asarray(xy, dtype=float)
    return xy[..., ::-1].copy()


def frame_xy_to_napari(frame: int | np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(N, 2) (x, y) on ``frame`` -> (N, 3) napari (t, row, col)."""
    xy = np.atleast_2d(np.asarray(xy, dtype=float))
    t = np.broadcast_to(np.asarray(frame, dtype=float), (len(xy),))
    return np.column_stack([t, xy[:, 1], xy[:, 0]])


def napari_to_frame_xy(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) napari (t, row, col) -> (frames (N,) int, xy (N, 2))."""
    data = np.atleast_2d(np.asarray(data, dtype=float))
    frames = np.rint(data[:, -3]).astype(int)
    return frames, data[:, [-1, -2]].copy()

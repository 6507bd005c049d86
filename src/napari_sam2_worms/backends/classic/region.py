"""Compact masks for the classic backend.

A :class:`Region` is a mask stored as its bounding box and a boolean crop, so tracking
state stays small and overlaps are computed on a few hundred pixels, not whole frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Region"]


@dataclass
class Region:
    """A mask as a bounding box (top-left ``y0, x0``) and a boolean crop."""

    y0: int
    x0: int
    crop: np.ndarray

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> Region:
        """Crop a full-frame boolean mask to its bounding box (empty -> 0x0 crop)."""
        mask = np.asarray(mask, bool)
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return cls(0, 0, np.zeros((0, 0), bool))
        cols = np.flatnonzero(mask.any(axis=0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        return cls(int(y0), int(x0), mask[y0:y1, x0:x1].copy())

    @classmethod
    def from_labels(cls, labels: np.ndarray, sl: tuple[slice, slice], ids) -> Region:
        """Take the pixels of ``labels`` in window ``sl`` whose label is in ``ids``."""
        win = labels[sl]
        crop = win == ids[0] if len(ids) == 1 else np.isin(win, ids)
        return cls(sl[0].start, sl[1].start, crop).tight()

    @property
    def area(self) -> int:
        """Number of pixels."""
        return int(self.crop.sum())

    @property
    def empty(self) -> bool:
        """Whether the region holds no pixel."""
        return self.crop.size == 0 or not self.crop.any()

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1)."""
        h, w = self.crop.shape
        return self.y0, self.y0 + h, self.x0, self.x0 + w

    def centroid(self) -> tuple[float, float]:
        """(x, y) centroid (NaN when empty)."""
        ys, xs = np.nonzero(self.crop)
        if ys.size == 0:
            return float("nan"), float("nan")
        return float(xs.mean() + self.x0), float(ys.mean() + self.y0)

    def tight(self) -> Region:
        """Return the same region cropped to its bounding box."""
        if self.crop.size == 0:
            return self
        rows = np.flatnonzero(self.crop.any(axis=1))
        if rows.size == 0:
            return Region(0, 0, np.zeros((0, 0), bool))
        cols = np.flatnonzero(self.crop.any(axis=0))
        return Region(
            self.y0 + int(rows[0]),
            self.x0 + int(cols[0]),
            self.crop[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1],
        )

    def shifted(self, dx: int, dy: int, shape: tuple[int, int]) -> Region:
        """Return the region moved by (dx, dy) pixels and clipped to a frame of ``shape`` (H, W)."""
        y0, y1, x0, x1 = self.bounds
        y0, y1, x0, x1 = y0 + dy, y1 + dy, x0 + dx, x1 + dx
        cy0, cy1 = max(y0, 0), min(y1, shape[0])
        cx0, cx1 = max(x0, 0), min(x1, shape[1])
        if cy1 <= cy0 or cx1 <= cx0:
            return Region(0, 0, np.zeros((0, 0), bool))
        crop = self.crop[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        return Region(cy0, cx0, crop).tight()

    def union(self, other: Region) -> Region:
        """Pixels in either region."""
        if other.empty:
            return self
        if self.empty:
            return other
        a, b = self.bounds, other.bounds
        window = (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))
        return Region(window[0], window[2], self.paste(window) | other.paste(window))

    def to_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Full-frame boolean mask."""
        out = np.zeros(shape, bool)
        if self.crop.size:
            y0, y1, x0, x1 = self.bounds
            out[y0:y1, x0:x1] = self.crop
        return out

    def paste(self, window: tuple[int, int, int, int]) -> np.ndarray:
        """Draw the region into a window (y0, y1, x0, x1) (parts outside are dropped)."""
        wy0, wy1, wx0, wx1 = window
        out = np.zeros((wy1 - wy0, wx1 - wx0), bool)
        if self.crop.size == 0:
            return out
        y0, y1, x0, x1 = self.bounds
        cy0, cy1, cx0, cx1 = max(y0, wy0), min(y1, wy1), max(x0, wx0), min(x1, wx1)
        if cy1 > cy0 and cx1 > cx0:
            out[cy0 - wy0 : cy1 - wy0, cx0 - wx0 : cx1 - wx0] = self.crop[
                cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0
            ]
        return out

    def values_in(self, labels: np.ndarray) -> np.ndarray:
        """Return the label values under the region's pixels."""
        if self.crop.size == 0:
            return np.zeros(0, labels.dtype)
        y0, y1, x0, x1 = self.bounds
        return labels[y0:y1, x0:x1][self.crop]

    def pack(self) -> tuple[int, int, tuple[int, int], np.ndarray]:
        """Return a compact copy (bits packed) for the result cache."""
        return self.y0, self.x0, self.crop.shape, np.packbits(self.crop)

    @classmethod
    def unpack(cls, packed) -> Region:
        """Rebuild a region from :meth:`pack`'s output."""
        y0, x0, shape, bits = packed
        n = int(shape[0]) * int(shape[1])
        return cls(y0, x0, np.unpackbits(bits, count=n).astype(bool).reshape(shape))

"""Foreground blobs of one frame, and one seed point per animal (``detect_worms``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .classic_background import (
    STRUCTURE,
    BackgroundModel,
    auto_polarity,
    auto_threshold,
    contrast_norm,
    spatial_background,
    to_grey,
)

__all__ = ["Blobs", "blob_points", "detect_worms", "segment", "union_slices"]


@dataclass
class Blobs:
    """Segmentation of one frame."""

    labels: np.ndarray  # (H, W) int32, 0 = background
    areas: np.ndarray  # areas[label]; 0 for background and blobs under min_area
    slices: list  # slices[label - 1] -> (slice, slice) or None


def segment(model: BackgroundModel, grey: np.ndarray, min_area: int) -> Blobs:
    """Label the foreground; blobs under ``min_area`` get area 0 and count as absent."""
    fg = model.foreground(grey)
    labels, n = ndimage.label(fg, STRUCTURE)
    ys, xs = np.nonzero(fg)
    lab = labels[ys, xs]
    areas = np.bincount(lab, minlength=n + 1)
    areas[0] = 0
    if min_area > 1:
        areas[areas < min_area] = 0  # cheaper than relabelling the whole frame
    return Blobs(labels, areas, _bounding_slices(ys, xs, lab, n))


def _bounding_slices(ys, xs, lab, n: int) -> list:
    """Like ``ndimage.find_objects`` but from the foreground pixels only (faster)."""
    out: list = [None] * n
    if lab.size == 0:
        return out
    order = np.argsort(lab, kind="stable")
    lab, ys, xs = lab[order], ys[order], xs[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    y0, y1 = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts) + 1
    x0, x1 = np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts) + 1
    for i, b in enumerate(lab[starts]):
        out[b - 1] = (slice(int(y0[i]), int(y1[i])), slice(int(x0[i]), int(x1[i])))
    return out


def detect_worms(
    image: np.ndarray,
    background: np.ndarray | None = None,
    *,
    polarity: str = "auto",
    threshold: float | None = None,
    min_area: int = 20,
    max_area: int | None = None,
    max_objects: int | None = None,
    filter_size: int = 41,
) -> list[tuple[float, float]]:
    """One positive point (x, y) inside each animal-sized blob of one image.

    Parameters
    ----------
    image : (H, W) or (H, W, 3) frame.
    background : background image; None = estimated from the image alone by a grey
        closing/opening with a ``filter_size`` square (wider than an animal).
    polarity, threshold : as for :class:`ClassicBackend`.
    min_area, max_area : blob area limits (pixels).
    max_objects : keep at most this many (largest blobs first).

    Returns
    -------
    Points (x, y), each at the blob's most interior pixel, largest blob first.
    """
    grey = to_grey(image)
    if polarity == "auto":
        polarity = auto_polarity(grey)
    if background is None:
        bg = spatial_background(grey, polarity, filter_size)
    else:
        bg = np.asarray(background)
        bg = (to_grey(bg) if bg.ndim == 3 else bg).astype(np.float32)
    if threshold is None:
        s = 1.0 if polarity == "bright" else -1.0
        norm = contrast_norm(bg)
        threshold = auto_threshold(s * (grey - bg) / norm, float(np.median(norm)))
    model = BackgroundModel.build(bg, polarity, threshold)
    blobs = segment(model, grey, min_area)
    return blob_points(blobs, max_area, max_objects)


def blob_points(blobs: Blobs, max_area, max_objects) -> list[tuple[float, float]]:
    out = []
    for lab in np.argsort(-blobs.areas[1:], kind="stable") + 1:
        a = blobs.areas[lab]
        if a == 0 or (max_area is not None and a > max_area):
            continue
        sl = blobs.slices[lab - 1]
        crop = np.pad(blobs.labels[sl] == lab, 1)
        depth = ndimage.distance_transform_edt(crop)
        r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
        out.append((float(sl[1].start + c - 1), float(sl[0].start + r - 1)))
        if max_objects is not None and len(out) >= max_objects:
            break
    return out


def union_slices(slices) -> tuple[slice, slice]:
    s = [x for x in slices if x is not None]
    return (
        slice(min(a[0].start for a in s), max(a[0].stop for a in s)),
        slice(min(a[1].start for a in s), max(a[1].stop for a in s)),
    )

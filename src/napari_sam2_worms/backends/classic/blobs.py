"""Foreground blobs of one frame, and one seed point per animal (``detect_worms``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .background import (
    STRUCTURE,
    BackgroundModel,
    auto_polarity,
    contrast_norm,
    measure_threshold,
    spatial_background,
    to_grey,
)

__all__ = [
    "BlobFilter",
    "Blobs",
    "animal_blobs",
    "blob_points",
    "detect_worms",
    "elongation",
    "segment",
    "typical_area",
    "union_slices",
]


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
    min_elongation: float | None = None,
    max_elongation: float | None = None,
    core: float = 2.0,
) -> list[tuple[float, float]]:
    """One positive point (x, y) inside each animal-sized blob of one image.

    Parameters
    ----------
    image : (H, W) or (H, W, 3) frame.
    background : background image; None = estimated from the image alone by a grey
        closing/opening with a ``filter_size`` square (wider than an animal).
    polarity, threshold : as for :class:`ClassicBackend`.
    min_area, max_area : blob area limits (pixels); max_area None = 5 x the typical
        animal area (see :class:`BlobFilter`).
    min_elongation, max_elongation, core : shape and core filter (:class:`BlobFilter`).
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
        contrast = s * (grey - bg) / norm
        threshold, _, body = measure_threshold(contrast, float(np.median(norm)))
    else:
        body = float(threshold)
    model = BackgroundModel.build(
        bg, polarity, threshold, normalise_gain=False, body_threshold=body
    )
    blobs = segment(model, grey, min_area)
    flt = BlobFilter(min_area, max_area, min_elongation, max_elongation, core)
    counts = None
    if core > 0:
        strong = model.contrast(grey) > core * model.body_threshold
        counts = np.bincount(blobs.labels[strong], minlength=len(blobs.areas))
    keep, _ = animal_blobs(blobs, counts, flt)
    return blob_points(blobs, None, max_objects, keep)


@dataclass
class BlobFilter:
    """Which blobs count as animals for detection (size and shape).

    Attributes
    ----------
    min_area, max_area : area limits (pixels); None = automatic: 0.3 x and 5 x the
        typical animal area (:func:`typical_area`, measured over sampled frames where
        the caller gives it, else on this frame).
    min_elongation, max_elongation : limits on the blob's length over width
        (:func:`elongation`): a worm is about 5-15, a fly or a mouse 1.5-3, a round
        speck about 0.8; an arena wall seen edge-on is very long. None = no limit.
    core : a blob counts only if it holds at least ``core_pixels`` pixels above
        ``core`` x the threshold (hysteresis: faint noise and debris blobs have no dark
        core; animals do). 0 disables.
    """

    min_area: float | None = None
    max_area: float | None = None
    min_elongation: float | None = None
    max_elongation: float | None = None
    core: float = 2.0
    core_pixels: int = 5

    def __post_init__(self) -> None:
        """Refuse negative or crossed limits."""
        for name in ("min_area", "max_area", "min_elongation", "max_elongation"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0, not {v}")
        lo, hi = self.min_area, self.max_area
        if lo is not None and hi is not None and hi < lo:
            raise ValueError(f"max_area ({hi:g}) is below min_area ({lo:g})")
        lo, hi = self.min_elongation, self.max_elongation
        if lo is not None and hi is not None and hi < lo:
            raise ValueError("max_elongation is below min_elongation")


def elongation(mask: np.ndarray) -> float:
    """Length over width of a blob: its area over the square of its width.

    The width is twice the largest distance from the blob's edge, so the measure holds
    for a coiled or bent worm as for a straight one: a worm is about 5-15, a fly or a
    mouse 1.5-3, a round speck about 0.8 (pi/4).
    """
    m = np.asarray(mask, bool)
    area = int(m.sum())
    if area == 0:
        return 0.0
    width = 2.0 * float(ndimage.distance_transform_edt(np.pad(m, 1)).max())
    return area / max(width, 1.0) ** 2


def _cored(blobs: Blobs, core_counts, flt: BlobFilter) -> np.ndarray:
    areas = blobs.areas
    cand = np.flatnonzero(areas)
    if core_counts is not None and flt.core > 0 and cand.size:
        cc = np.zeros(len(areas), np.int64)
        cc[: len(core_counts)] = core_counts[: len(areas)]
        cand = cand[cc[cand] >= flt.core_pixels]
    return cand


def typical_area(blobs: Blobs, core_counts, flt: BlobFilter | None = None) -> float:
    """Return the area of the blob that holds the median foreground pixel (blobs with a core).

    Weighting by pixels lets the animals dominate the many specks; 0 when none.
    """
    cand = _cored(blobs, core_counts, flt or BlobFilter())
    if not cand.size:
        return 0.0
    a = np.sort(blobs.areas[cand]).astype(float)
    return float(a[min(np.searchsorted(np.cumsum(a), 0.5 * a.sum()), len(a) - 1)])


def animal_blobs(
    blobs: Blobs, core_counts: np.ndarray | None, flt: BlobFilter, typical: float | None = None
) -> tuple[list[int], tuple[float, float]]:
    """Labels of the blobs that pass ``flt``, largest first, and the area limits used.

    ``core_counts[label]``: pixels of each blob above the core contrast (None = no
    core test). ``typical``: the typical animal area for the automatic limits (None =
    :func:`typical_area` of this frame).
    """
    areas = blobs.areas
    cand = _cored(blobs, core_counts, flt)
    if typical is None:
        typical = typical_area(blobs, core_counts, flt)
    lo = flt.min_area if flt.min_area is not None else 0.3 * typical
    hi = flt.max_area if flt.max_area is not None else (5.0 * typical if typical else np.inf)
    keep = []
    for lab in cand[np.argsort(-areas[cand], kind="stable")]:
        if not lo <= areas[lab] <= hi:
            continue
        if flt.min_elongation is not None or flt.max_elongation is not None:
            e = elongation(blobs.labels[blobs.slices[lab - 1]] == lab)
            if flt.min_elongation is not None and e < flt.min_elongation:
                continue
            if flt.max_elongation is not None and e > flt.max_elongation:
                continue
        keep.append(int(lab))
    return keep, (float(lo), float(hi))


def blob_points(
    blobs: Blobs, max_area, max_objects, labels: list[int] | None = None
) -> list[tuple[float, float]]:
    """Return the most interior pixel (x, y) of each blob (``labels``, or all, largest first)."""
    out = []
    order = labels if labels is not None else np.argsort(-blobs.areas[1:], kind="stable") + 1
    for lab in order:
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
    """Return the bounding window of several (row, col) slice pairs (None ignored)."""
    s = [x for x in slices if x is not None]
    return (
        slice(min(a[0].start for a in s), max(a[0].stop for a in s)),
        slice(min(a[1].start for a in s), max(a[1].stop for a in s)),
    )

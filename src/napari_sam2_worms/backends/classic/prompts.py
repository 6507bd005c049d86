"""Turn an object's prompts on one frame into a mask (classic backend).

A positive point selects the blob under it (snapped from up to ``snap_radius`` pixels
off), a box the blobs mostly inside it, a negative point removes the blob under it
or, inside a selected blob, takes the part nearer to it away; a mask prompt is the
mask. Pixels another object's prompt holds on the same frame are never taken.
Every mistake a user can make raises :class:`~napari_sam2_worms.backends.base.BadPromptError`
with a one-line message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from ..base import BadPromptError
from .blobs import union_slices
from .region import Region

if TYPE_CHECKING:
    from ..base import ObjectPrompts
    from .blobs import Blobs

__all__ = ["cut", "resolve", "snap", "subtract"]

Seed = tuple[int, int, int]  # (col, row, label): label 1 positive, 0 negative


def resolve(
    prompts: ObjectPrompts,
    frame: int,
    object_id: int,
    blobs: Blobs,
    claimed: np.ndarray,
    cached: Region | None,
    snap_radius: int,
) -> Region:
    """Select the mask an object's prompts describe on one frame.

    Parameters
    ----------
    prompts : ObjectPrompts
        The object's points, labels, box or mask on this frame.
    frame, object_id : int
        Where the prompts are (for messages).
    blobs : Blobs
        The frame's blobs (every size: ``min_area=1``).
    claimed : numpy.ndarray
        (H, W) int map of the pixels other objects' prompts hold on this frame
        (their id, 0 = free).
    cached : Region or None
        The object's tracked mask on this frame, which negative points alone edit.
    snap_radius : int
        How far (pixels) off a blob a positive click may be.

    Returns
    -------
    Region
        The selected, non-empty mask.

    Raises
    ------
    BadPromptError
        When the prompts select nothing, are outside the frame, or click a blob
        another object already holds.
    """
    h, w = claimed.shape
    if prompts.mask is not None:
        m = np.asarray(prompts.mask, bool)
        if m.shape != (h, w):
            raise BadPromptError(f"the mask prompt is {m.shape}, the frame is {(h, w)}")
        if not m.any():
            raise BadPromptError("the mask prompt is empty: paint some pixels or clear it")
        return Region.from_mask(m)
    lab = blobs.labels
    pos: list[tuple[float, float]] = []
    neg: list[tuple[float, float]] = []
    for (x, y), label in zip(np.asarray(prompts.points, float), np.asarray(prompts.labels)):
        if not (0 <= x < w and 0 <= y < h):
            raise BadPromptError(f"the point ({x:.1f}, {y:.1f}) is outside the {w}x{h} frame")
        (pos if label == 1 else neg).append((x, y))
    if not pos and prompts.box is None:
        return subtract(cached, frame, object_id, neg, lab)
    seeds = _positive(pos, frame, lab, claimed, snap_radius)
    selected = set(seeds)
    if prompts.box is not None:
        selected.update(_in_box(prompts.box, frame, blobs, claimed))
    for x, y in neg:
        r, c = min(round(y), h - 1), min(round(x), w - 1)
        b = int(lab[r, c])
        if b in seeds:
            seeds[b].append((c, r, 0))
        elif b:
            selected.discard(b)
    if not selected:
        raise BadPromptError(f"the prompts on frame {frame} select nothing")
    sl = union_slices([blobs.slices[b - 1] for b in selected])
    region = Region.from_labels(lab, sl, sorted(selected))
    cuts = {b: s for b, s in seeds.items() if any(k == 0 for *_, k in s)}
    if cuts:
        region = cut(region, lab, cuts)
    # never take pixels another object's prompt holds on this frame
    y0, y1, x0, x1 = region.bounds
    region = Region(y0, x0, region.crop & (claimed[y0:y1, x0:x1] == 0)).tight()
    if region.empty:
        raise BadPromptError(f"the prompts on frame {frame} select nothing")
    return region


def _positive(
    pos: list, frame: int, lab: np.ndarray, claimed: np.ndarray, snap_radius: int
) -> dict[int, list[Seed]]:
    """Return the blobs under positive points (snapped), each with its seeds."""
    seeds: dict[int, list[Seed]] = {}
    for x, y in pos:
        hit = snap(lab, x, y, snap_radius)
        if hit is None:
            raise BadPromptError(
                f"the point ({x:.1f}, {y:.1f}) on frame {frame} is on empty background: "
                "click inside an animal (or lower the classic backend's threshold)"
            )
        r, c = hit
        if claimed[r, c]:
            raise BadPromptError(
                f"the point ({x:.1f}, {y:.1f}) on frame {frame} is on object "
                f"{claimed[r, c]}, which already claims that blob: click another animal, or "
                f"add a negative point on this animal to object {claimed[r, c]} first"
            )
        seeds.setdefault(int(lab[r, c]), []).append((c, r, 1))
    return seeds


def _in_box(box, frame: int, blobs: Blobs, claimed: np.ndarray) -> list[int]:
    """Return the free blobs at least half inside ``box`` (else the one most inside it)."""
    h, w = claimed.shape
    x0, y0, x1, y1 = (round(v) for v in box)
    x0, x1 = sorted((max(x0, 0), min(x1, w)))
    y0, y1 = sorted((max(y0, 0), min(y1, h)))
    win = blobs.labels[y0:y1, x0:x1]
    ids, counts = np.unique(win[(win > 0) & (claimed[y0:y1, x0:x1] == 0)], return_counts=True)
    inside = [int(i) for i, n in zip(ids, counts) if n >= 0.5 * blobs.areas[i]]
    if not inside and len(ids):
        inside = [int(ids[np.argmax(counts)])]
    if not inside:
        raise BadPromptError(f"the box on frame {frame} holds no free animal: draw it around one")
    return inside


def subtract(base: Region | None, frame: int, object_id: int, neg: list, lab: np.ndarray) -> Region:
    """Take blobs (or the part near each point) off a tracked mask: negative points alone.

    Parameters
    ----------
    base : Region or None
        The object's tracked mask on this frame.
    frame, object_id : int
        Where the points are (for messages).
    neg : list of (x, y)
        The negative points.
    lab : numpy.ndarray
        The frame's blob labels.

    Returns
    -------
    Region
        What remains of the mask.
    """
    if base is None or base.empty:
        raise BadPromptError(
            f"object {object_id} has no mask on frame {frame} to remove anything from: "
            "add a positive point inside the animal"
        )
    h, w = lab.shape
    for x, y in neg:
        r, c = min(round(y), h - 1), min(round(x), w - 1)
        b = int(lab[r, c])
        y0, y1, x0, x1 = base.bounds
        if not (y0 <= r < y1 and x0 <= c < x1 and base.crop[r - y0, c - x0]):
            continue  # not on this object: nothing to remove
        in_b = base.crop & (lab[y0:y1, x0:x1] == b) if b else np.zeros_like(base.crop)
        if in_b.any() and (base.crop & ~in_b).any():
            base = Region(y0, x0, base.crop & ~in_b).tight()
        else:  # one blob (e.g. touching animals): cut off the part nearer the point
            depth = ndimage.distance_transform_edt(np.pad(base.crop, 1))[1:-1, 1:-1]
            dr, dc = np.unravel_index(int(np.argmax(depth)), depth.shape)
            seeds: list[Seed] = [(x0 + int(dc), y0 + int(dr), 1), (c, r, 0)]
            base = cut(base, np.where(base.to_mask((h, w)), 1, 0), {1: seeds})
    if base.empty:
        raise BadPromptError(
            f"the negative points on frame {frame} remove all of object {object_id}"
        )
    return base


def snap(lab: np.ndarray, x: float, y: float, radius: int) -> tuple[int, int] | None:
    """Return the (row, col) of the blob pixel nearest (x, y) within ``radius`` (None: none)."""
    h, w = lab.shape
    r, c = min(round(y), h - 1), min(round(x), w - 1)
    if lab[r, c]:
        return r, c
    k = radius
    y0, y1, x0, x1 = max(r - k, 0), min(r + k + 1, h), max(c - k, 0), min(c + k + 1, w)
    ys, xs = np.nonzero(lab[y0:y1, x0:x1])
    if ys.size == 0:
        return None
    d = (ys + y0 - r) ** 2 + (xs + x0 - c) ** 2
    i = int(np.argmin(d))
    if d[i] > k * k:
        return None
    return int(ys[i] + y0), int(xs[i] + x0)


def cut(region: Region, lab: np.ndarray, seeds: dict[int, list[Seed]]) -> Region:
    """Inside blobs with positive and negative points, keep the pixels nearer a positive."""
    y0, y1, x0, x1 = region.bounds
    crop = region.crop.copy()
    yy, xx = np.mgrid[y0:y1, x0:x1]
    win = lab[y0:y1, x0:x1]
    for b, pts in seeds.items():
        d = np.stack([(xx - c) ** 2 + (yy - r) ** 2 for c, r, _ in pts])
        kind = np.array([k for *_, k in pts])
        crop &= ~((win == b) & (kind[np.argmin(d, axis=0)] == 0))
    return Region(y0, x0, crop).tight()

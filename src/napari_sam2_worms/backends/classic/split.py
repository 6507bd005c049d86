"""The splitting of merged blobs for the classic backend.

When several tracked animals fall into one foreground blob (worms touching or
crossing), :func:`split_blob` shares the blob's pixels out by a signed distance to each
animal's predicted mask (its previous mask moved by its velocity): a pixel goes to the
animal whose predicted body it lies deepest inside, or, outside all of them, to the
nearest one. At an X-shaped crossing this cuts along the bisector of the two bodies,
so each worm keeps a worm-shaped mask and its identity.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .region import Region

__all__ = ["clip_to", "split_blob"]


def _union_window(regions, shape, margin: int = 2) -> tuple[int, int, int, int]:
    b = np.array([r.bounds for r in regions if r.crop.size])
    return (
        max(int(b[:, 0].min()) - margin, 0),
        min(int(b[:, 1].max()) + margin, shape[0]),
        max(int(b[:, 2].min()) - margin, 0),
        min(int(b[:, 3].max()) + margin, shape[1]),
    )


def split_blob(
    blob: Region,
    predictions: list[Region],
    shape: tuple[int, int],
    templates: list[Region | None] | None = None,
) -> list[Region]:
    """Share a merged blob's pixels among several predicted animal masks.

    Parameters
    ----------
    blob : the merged foreground blob.
    predictions : each animal's predicted mask on this frame (previous mask moved by
        its velocity); at least one must be non-empty.
    shape : frame shape (H, W).
    templates : optional per animal, its last unmerged body moved to this frame. A
        template has priority over the *other* animals' predictions (which may hold
        pixels a previous split gave them wrongly, e.g. a head crossing a body).

    Returns
    -------
    One region per prediction (possibly empty), disjoint, covering the blob.
    """
    usable = [p for p in predictions if not p.empty]
    if not usable:
        raise ValueError("split_blob needs at least one non-empty prediction")
    templates = templates or [None] * len(predictions)
    window = _union_window([blob, *usable], shape)
    inside = blob.paste(window)
    tmpl = [t.paste(window) if t is not None and not t.empty else None for t in templates]
    best = None
    owner = np.zeros(inside.shape, np.int32)
    for i, pred in enumerate(predictions):
        if pred.empty:
            continue
        p = pred.paste(window)
        for j, t in enumerate(tmpl):
            if t is not None and j != i:
                p &= ~t
        if tmpl[i] is not None:
            p |= tmpl[i]
        if not p.any():
            continue
        # signed distance: negative (depth) inside the prediction, positive outside
        sd = ndimage.distance_transform_edt(~p) - ndimage.distance_transform_edt(p)
        if best is None:
            best, owner[:] = sd, i
        else:
            closer = sd < best
            owner[closer] = i
            np.minimum(best, sd, out=best)
    wy0, _, wx0, _ = window
    return [Region(wy0, wx0, inside & (owner == i)).tight() for i in range(len(predictions))]


def clip_to(blob: Region, pred: Region, margin: float, shape: tuple[int, int]) -> Region:
    """Keep the part of ``blob`` within ``margin`` pixels of ``pred`` (drops what merged in)."""
    window = _union_window([blob, pred], shape)
    p = pred.paste(window)
    near = ndimage.distance_transform_edt(~p) <= margin
    wy0, _, wx0, _ = window
    return Region(wy0, wx0, blob.paste(window) & near).tight()

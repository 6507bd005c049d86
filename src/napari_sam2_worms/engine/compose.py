"""Composing one frame's tracking result into the label stack (pure functions).

The rule (see ``docs/architecture.md``): during propagation, objects the user edited
on the frame keep their pixels and go first, then incoming objects by score (higher
first, then lower id), then objects without a result keep their pixels where nothing
else landed. A prompt result (``only``: the user's latest edit) goes first instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..backends.base import FrameResult, LabelMasks

if TYPE_CHECKING:
    from collections.abc import Iterable


def compose_frame(
    current: np.ndarray,
    result: FrameResult,
    objects: Iterable[int],
    edited: set[int],
    only: set[int] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Compose a result into a label frame; return the new frame and the objects written.

    Parameters
    ----------
    current : the frame's labels now.
    result : the backend's result for the frame.
    objects : the session's objects (results of others are ignored).
    edited : objects the user prompted or painted on this frame.
    only : write only these objects' results, as the user's latest edit.
    """
    objects = list(objects)
    if only is None and isinstance(result.masks, LabelMasks) and result.masks.plain():
        return _compose_index(current, result.masks, objects, edited)
    new = np.zeros_like(current)
    incoming = {
        o: m for o, m in result.masks.items() if o in objects and (only is None or o in only)
    }
    if only is None:
        incoming = {o: m for o, m in incoming.items() if o not in edited}
    locked = [o for o in objects if o not in incoming and o in edited]
    kept = [o for o in objects if o not in incoming and o not in locked]
    if only is not None:
        order = sorted(incoming)
    else:
        for o in locked:
            new[(current == o) & (new == 0)] = o
        order = sorted(incoming, key=lambda o: (-_score(result, o), o))
    for o in order:
        m = np.asarray(incoming[o], bool)
        new[m & (new == 0)] = o
    if only is not None:
        for o in locked:
            new[(current == o) & (new == 0)] = o
    for o in kept:
        new[(current == o) & (new == 0)] = o
    return new, list(incoming)


def _compose_index(
    current: np.ndarray, masks: LabelMasks, objects: list[int], edited: set[int]
) -> tuple[np.ndarray, list[int]]:
    """Do :func:`compose_frame` for a result given as one non-overlapping index image.

    The same outcome in a few whole-frame operations whatever the number of objects.
    """
    incoming = [o for o in masks.ids if o in objects and o not in edited]
    locked = [o for o in objects if o in edited]
    kept = [o for o in objects if o not in incoming and o not in edited]
    lut = np.zeros(len(masks.ids) + 1, current.dtype)
    for k, o in enumerate(masks.ids):
        if o in incoming:
            lut[k + 1] = o
    if np.array_equal(lut, np.arange(len(lut))):  # ids 1..n, all incoming: no lookup
        new = masks.index.astype(current.dtype, copy=True)
    else:
        new = np.take(lut, masks.index)
    # a frame tracked for the first time holds no labels: skip the whole-frame tests
    if (locked or kept) and current.any():
        present = np.isin(current, np.asarray(locked + kept, current.dtype))
        if present.any():
            if locked:
                lock = np.isin(current, np.asarray(locked, current.dtype))
                new[lock] = current[lock]
            keep = present & (new == 0)
            new[keep] = current[keep]
    return new, incoming


def _score(result: FrameResult, object_id: int) -> float:
    s = result.scores.get(object_id, 0.0)
    return float(s) if s is not None and not np.isnan(s) else -np.inf

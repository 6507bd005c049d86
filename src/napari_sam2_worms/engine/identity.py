"""Swap the identities of two objects over a frame range (after a tracker mixed them up).

When two animals touch, a tracker may continue each track on the other animal. The fix
is one operation, :func:`swap_identities`: objects ``a`` and ``b`` exchange everything
that belongs to them on frames ``start..stop``: their masks in the label stack, their
scores, the user's prompts (clicks, boxes, painted masks) and head/tail flips.
Skeletons, flags, exports and colours follow, since they are all made from these.

So that a later propagation keeps the fix, the swapped masks on ``start`` become both
objects' prompts there (painted-mask prompts, sent to the backend through its mask
path: SAM 2's ``add_new_mask``), and, for a range that ends before the video does,
their unchanged masks on ``stop + 1`` too. The backend forgets the two objects'
tracking memory and gets their prompts again, so no propagation continues from the
old identities. Each swap is logged in ``session.settings["identity_swaps"]`` (saved
with the session).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .session import TrackingSession

log = logging.getLogger(__name__)

__all__ = ["SwapResult", "swap_identities"]


@dataclass
class SwapResult:
    """What :func:`swap_identities` did.

    Attributes
    ----------
    a, b : the two objects.
    start, stop : the swapped frames (inclusive).
    pinned : (frame, object) pairs that got a mask prompt (the swap's anchors).
    unpinned : (frame, object) pairs that could not (no mask there): a propagation
        through that frame may bring the old identity back for that object.
    backend_error : why the backend could not take the new prompts at once (e.g. out
        of memory), or None; the swap is done in the session all the same, and every
        prompt is handed to the backend again before its next use.
    """

    a: int
    b: int
    start: int
    stop: int
    pinned: list[tuple[int, int]] = field(default_factory=list)
    unpinned: list[tuple[int, int]] = field(default_factory=list)
    backend_error: str | None = None

    @property
    def frames(self) -> range:
        """The frames of the swap, ``start..stop`` inclusive."""
        return range(self.start, self.stop + 1)


def _swap_keys(store: dict, a: int, b: int, start: int, stop: int) -> None:
    """Exchange objects ``a`` and ``b`` in the keys ``(frame, object)`` of ``store``."""
    moved = {}
    for key in [k for k in store if start <= k[0] <= stop and k[1] in (a, b)]:
        moved[(key[0], b if key[1] == a else a)] = store.pop(key)
    store.update(moved)


def _swap_flips(flips: list, a: int, b: int, start: int, stop: int) -> list:
    """Head/tail flips of ``a`` inside ``start..stop`` become ``b``'s and vice versa."""
    out = []
    for obj, s, e in flips:
        if obj not in (a, b) or e < start or s > stop:
            out.append((obj, s, e))
            continue
        other = b if obj == a else a
        if s < start:
            out.append((obj, s, start - 1))
        out.append((other, max(s, start), min(e, stop)))
        if e > stop:
            out.append((obj, stop + 1, e))
    return out


def swap_identities(
    session: TrackingSession, a: int, b: int, start: int, stop: int | None = None
) -> SwapResult:
    """Objects ``a`` and ``b`` exchange identities on frames ``start..stop``.

    Parameters
    ----------
    session : the tracking session (changed in place).
    a, b : two different object ids.
    start : first frame swapped.
    stop : last frame swapped (inclusive); default the video's last frame.

    Returns
    -------
    SwapResult

    Raises
    ------
    KeyError : an object does not exist.
    ValueError : ``a == b`` or an empty range.
    IndexError : a frame outside the video.

    Not while a propagation of this session runs (the widget refuses it).
    """
    a, b = int(a), int(b)
    session._require(a)
    session._require(b)
    if a == b:
        raise ValueError("pick two different objects to swap")
    start = session._check_frame(start)
    stop = session.n_frames - 1 if stop is None else session._check_frame(stop)
    if stop < start:
        raise ValueError(f"the swap range is empty: from frame {start} to {stop}")
    result = SwapResult(a, b, start, stop)
    with session._lock:
        labels = session.labels
        for f in range(start, stop + 1):
            frame = labels[f]
            ma, mb = frame == a, frame == b
            if ma.any() or mb.any():
                frame[ma] = b
                frame[mb] = a
        sa, sb = session.scores[a], session.scores[b]
        sa[start : stop + 1], sb[start : stop + 1] = (
            sb[start : stop + 1].copy(),
            sa[start : stop + 1].copy(),
        )
        prompts = session.prompts
        for store in (prompts.points, prompts.boxes, prompts.masks):
            _swap_keys(store, a, b, start, stop)
        session.flips = _swap_flips(session.flips, a, b, start, stop)
        # anchors: the masks as they are now become prompts on the range's edges
        anchors = [start] + ([stop + 1] if stop + 1 < session.n_frames else [])
        for f in anchors:
            for obj in (a, b):
                mask = labels[f] == obj
                if f > stop and np.isnan(session.scores[obj][f]) and not mask.any():
                    continue  # past the range, never tracked: nothing to keep
                if not mask.any():
                    result.unpinned.append((f, obj))
                    continue
                # clicks and boxes there stay (shown, saved); the backend uses the mask
                prompts.masks[(f, obj)] = mask
                result.pinned.append((f, obj))
        try:
            _resend(session, a, b)
        except Exception as exc:  # the session is swapped: resend everything later
            log.warning("the backend did not take the swapped prompts: %s", exc)
            result.backend_error = str(exc) or type(exc).__name__
            session.backend.reset()
            session._backend_dirty = True
        session.settings.setdefault("identity_swaps", []).append(
            {"a": a, "b": b, "start": start, "stop": stop}
        )
    log.info(
        "objects %d and %d swapped on frames %d-%d (mask prompts on %s)",
        a,
        b,
        start,
        stop,
        result.pinned,
    )
    return result


def _resend(session: TrackingSession, a: int, b: int) -> None:
    """Make the backend forget ``a`` and ``b`` and give it their prompts again.

    The backend drops their prompts and tracking memory: a propagation then starts from
    the swapped identities.
    """
    if session._backend_dirty:
        return  # the backend gets every stored prompt before its next use anyway
    backend = session.backend
    backend.remove_object(a)
    backend.remove_object(b)
    for frame, obj in sorted(k for k in session.prompts.keys() if k[1] in (a, b)):  # noqa: SIM118
        backend.set_prompts(frame, obj, session.prompts.for_frame_object(frame, obj))

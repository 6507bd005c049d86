"""The worker process of a skeleton pool: skeletonize the frames a stream announces.

Each worker follows its share of the objects through time as the stack loop of
:func:`~napari_sam2_worms.skeleton.skeletonize_labels` does, and answers every frame
with its items and the frame's signature and object boxes (see :mod:`.stream`).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import numpy as np

from .labels import (
    PrevChain,
    _crop,
    _object_slices,
    frame_signature,
    item_key,
    object_boxes,
    skeleton_item,
)

log = logging.getLogger(__name__)


#: what a worker sends once it is up (an epoch no stream has)
_READY: tuple[int, int, list, None] = (-1, -1, [], None)


def _warm_up(n_points: int) -> None:
    """Import and run everything a skeleton needs once, before the first frame."""
    frame = np.zeros((24, 48), np.uint8)
    frame[10:14, 6:42] = 1
    try:
        sub, r0, c0, border = _crop(frame, _object_slices(frame)[1])
        skeleton_item(sub, 1, r0, c0, border, n_points, None)
    except Exception:  # only a warm-up: the real frames report their own errors
        log.debug("skeleton worker warm-up failed", exc_info=True)


def _worker(conn: Any) -> None:
    """Worker process of a :class:`SkeletonPool`.

    Messages on ``conn``: ``("begin", epoch, ids, n_points)`` starts a stream (objects
    ``ids`` of each frame, followed through time); ``("end", epoch)`` closes it (its
    queued frames are dropped); ``(epoch, seq, frame, slot, ring)`` announces a label
    frame in the shared ring file; ``None`` ends the process.
    Replies ``(epoch, seq, items)`` for every frame of the open stream, so the feeder
    knows when a ring slot is free again; frames of a closed stream are dropped.
    """
    _warm_up(49)
    try:
        conn.send(_READY)
    except OSError:
        return
    chain = PrevChain()
    ids: set[int] = set()
    n_points = 49
    epoch = -1
    ring_key: tuple | None = None
    frames: np.ndarray | None = None
    pending: deque = deque()
    while True:
        if not _receive(conn, pending):
            return
        msg = pending.popleft()
        if msg is None:
            return
        if msg[0] == "begin":  # a new stream (no ids: this worker sits it out)
            _, epoch, ids, n_points = msg
            chain = PrevChain()
            frames, ring_key = None, None  # let go of the last stream's ring file
            continue
        if msg[0] == "end":  # the stream closed: its frames still queued are stale
            if msg[1] == epoch:
                epoch = -1
                frames, ring_key = None, None
            continue
        if any(m is None or m[0] in ("begin", "end") for m in pending):
            continue  # its stream was closed: nobody waits for this frame
        ep, seq, t, slot, ring = msg
        if ring != ring_key:
            path, shape, dtype = ring
            try:
                frames = np.memmap(path, dtype=dtype, mode="r", shape=shape)
            except (OSError, ValueError):  # a stream closed before we got here
                frames, ring_key = None, None
            else:
                ring_key = ring
        if frames is None or ep != epoch:
            continue  # a closed stream's frame: nobody waits for it
        frame = np.array(frames[slot])  # own copy: the slot is reused once we reply
        out, info = _skeletonize_frame(frame, t, ids, chain, n_points)
        try:
            conn.send((ep, seq, out, info))
        except OSError:  # the pool was closed without waiting for us
            return


def _receive(conn: Any, pending: deque) -> bool:
    """Queue the next message and whatever else is waiting; False once ``conn`` is gone."""
    try:
        if not pending:
            pending.append(conn.recv())
        while conn.poll():  # take what is queued: a newer stream makes frames stale
            pending.append(conn.recv())
    except (EOFError, OSError):
        return False
    return True


def _skeletonize_frame(
    frame: np.ndarray, t: int, ids: set[int], chain: PrevChain, n_points: int
) -> tuple[list, tuple]:
    """Skeletonize a worker's objects ``ids`` on frame ``t``; return its items and frame info.

    The info is the frame's identity and its objects' boxes: the stack loop checks the
    frame once instead of searching it again.
    """
    out = []
    mine = object_boxes(frame, ids)
    boxes = {oid: (sl[0].start, sl[0].stop, sl[1].start, sl[1].stop) for oid, sl in mine.items()}
    info = (t, frame_signature(frame), boxes)
    for oid, sl in mine.items():
        sub, r0, c0, border = _crop(frame, sl)
        p = chain.get(oid, t)
        key = item_key(sub, r0, c0, border, p, n_points)
        try:
            item = skeleton_item(sub, oid, r0, c0, border, n_points, p)
        except Exception:  # the stack loop will compute (and report) it
            log.debug("streamed skeleton of object %d, frame %d failed", oid, t, exc_info=True)
            continue
        chain.update(oid, t, item[1])
        out.append(((t, oid), key, item))
    return out, info

"""The skeleton stream: worker processes reading label frames from a shared ring."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_sam2_worms.skeleton import skeletonize_labels
from napari_sam2_worms.skeleton.stream import SkeletonStream


def test_ring_reuse_gives_the_stack_loop_result(small_plate, monkeypatch):
    """20 frames through a 4-frame ring (the feeder waits for free slots), 2 workers,
    one object left out: the cache holds exactly the streamed objects' skeletons and
    the tracks made from it equal the stack loop's; the ring file is removed."""
    import napari_sam2_worms.skeleton.labels as labels_mod

    labels = np.concatenate([small_plate.labels, small_plate.labels[::-1][1:9]])
    assert len(labels) == 20
    stream = SkeletonStream([1, 3], workers=2, ring_bytes=1)  # 1 byte: the minimum, 4 frames
    for t, frame in enumerate(labels):
        stream.feed(t, frame)
        if t == 0:
            assert stream.ring_size == 4 and os.path.exists(stream._ring_msg[0])
    path = stream._ring_msg[0]
    cache = stream.cache(timeout=120)
    stream.close()
    assert not os.path.exists(path)
    want = {(t, o) for t in range(20) for o in (1, 3) if (labels[t] == o).any()}
    assert set(cache) == want

    computed = []
    original = labels_mod.skeleton_item
    monkeypatch.setattr(
        labels_mod, "skeleton_item", lambda *a: computed.append(a[1]) or original(*a)
    )
    got = skeletonize_labels(labels, [1, 3], cache=cache)
    assert computed == []  # all reused
    monkeypatch.setattr(labels_mod, "skeleton_item", original)
    ref = skeletonize_labels(labels, [1, 3])
    np.testing.assert_array_equal(got.points, ref.points)
    np.testing.assert_array_equal(got.good, ref.good)


def test_closed_stream_ignores_frames(small_plate):
    stream = SkeletonStream([1], workers=1)
    stream.feed(0, small_plate.labels[0])
    stream.close()
    stream.feed(1, small_plate.labels[1])  # no error, nothing sent
    assert stream._sent == 1
    assert set(stream.cache()) <= {(0, 1)}


def test_a_dead_worker_never_stops_tracking(small_plate):
    """A worker killed mid-run: feeding goes on without error, what was delivered is
    kept, and the stack loop computes the rest (same tracks as without a stream)."""
    labels = small_plate.labels
    stream = SkeletonStream([1, 2, 3], workers=2)
    stream.feed(0, labels[0])
    stream.cache(timeout=60)
    stream._procs[0].kill()
    stream._procs[0].join(5)
    for t in range(1, len(labels)):
        stream.feed(t, labels[t])  # must not raise
    cache = stream.cache(timeout=30)
    stream.close()
    assert {(0, o) for o in (1, 2, 3) if (labels[0] == o).any()} <= set(cache)
    got = skeletonize_labels(labels, [1, 2, 3], cache=cache)
    ref = skeletonize_labels(labels, [1, 2, 3])
    np.testing.assert_array_equal(got.points, ref.points)


def test_points_per_centerline_follow_the_run_and_workers_the_objects(small_plate, monkeypatch):
    """A stream made for 21-point centerlines is reused by a 21-point stack loop; a
    stream never starts more processes than it has objects."""
    import napari_sam2_worms.skeleton.labels as labels_mod
    from napari_sam2_worms.skeleton.stream import stream_for_run

    labels = small_plate.labels
    stream = stream_for_run(labels, [1, 2], [(0, len(labels) - 1, False)], 8, n_points=21)
    assert len(stream._procs) == 2 and stream.n_points == 21
    for t, frame in enumerate(labels):
        stream.feed(t, frame)
    cache = stream.cache(timeout=120)
    stream.close()
    computed = []
    original = labels_mod.skeleton_item
    monkeypatch.setattr(
        labels_mod, "skeleton_item", lambda *a: computed.append(a[1]) or original(*a)
    )
    tracks = skeletonize_labels(labels, [1, 2], n_points=21, cache=cache)
    assert computed == [] and tracks.points.shape[2] == 21


def test_a_pool_serves_successive_streams(small_plate):
    """One pool, two streams: the same processes serve both; results of a stream
    closed before its workers answered never leak into the next one (epochs)."""
    from napari_sam2_worms.skeleton.stream import SkeletonPool

    labels = small_plate.labels
    pool = SkeletonPool(2)
    try:
        assert pool.wait_ready(timeout=60)
        pids = [p.pid for p in pool.procs]
        first = pool.stream([1, 2, 3], ring_bytes=1)
        for t in range(4):
            first.feed(t, labels[t])
        second = pool.stream([2], n_points=21)  # closes the first, answers unread
        assert first.closed and pool.current is second
        assert len(second._conns) == 1  # one object: one worker
        for t in range(len(labels)):
            second.feed(t, labels[::-1][t])
        cache = second.cache(timeout=120)
        assert set(cache) == {(t, 2) for t in range(len(labels)) if (labels[::-1][t] == 2).any()}
        got = skeletonize_labels(labels[::-1], [2], n_points=21, cache=cache)
        ref = skeletonize_labels(labels[::-1], [2], n_points=21)
        np.testing.assert_array_equal(got.points, ref.points)
        second.close()
        assert pool.usable and [p.pid for p in pool.procs] == pids  # still up, same ones
    finally:
        pool.close()
    assert not pool.usable
    assert not any(p.is_alive() for p in pool.procs)


def test_a_pool_keeps_one_ring_for_its_streams(small_plate, monkeypatch, caplog):
    """The ring is made ahead (prepare) and reused by the next stream of the same
    frames: its slots rewritten with other frames give that stream's own skeletons.
    Other frames get a new ring (the old file deleted); closing the pool deletes it.
    Where no ring can be made, feeding neither raises nor stops: skeletons come later."""
    from napari_sam2_worms.skeleton import stream as stream_mod

    labels = small_plate.labels
    shape, dtype = labels.shape[1:], labels.dtype
    pool = stream_mod.SkeletonPool(1)
    try:
        pool.prepare(shape, dtype)
        ring = pool.ring(shape, dtype)
        assert ring is pool.ring(shape, dtype) and os.path.exists(ring.path)
        runs = []
        for stack in (labels, labels[::-1]):
            stream = pool.stream([1, 2])
            for t in range(6):
                stream.feed(t, stack[t])
            cache = stream.cache(timeout=120)
            stream.close()
            assert stream._ring_msg[0] == ring.path and os.path.exists(ring.path)
            got = skeletonize_labels(stack[:6], [1, 2], cache=cache)
            ref = skeletonize_labels(stack[:6], [1, 2])
            np.testing.assert_array_equal(got.points, ref.points)
            runs.append(got.points)
        assert not np.array_equal(runs[0], runs[1])  # the second run's own frames
        other = pool.ring(shape, np.uint16 if dtype != np.uint16 else np.uint8)
        assert other is not ring and not os.path.exists(ring.path)
        # preparing (keep) never replaces the ring a stream may be writing
        assert pool.ring(shape, dtype, keep=True) is other and os.path.exists(other.path)
    finally:
        pool.close()
    assert not os.path.exists(other.path)

    def no_room(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(stream_mod, "FrameRing", no_room)
    stream = SkeletonStream([1], workers=1)
    try:
        for t in range(3):
            stream.feed(t, labels[t])  # no exception: tracking goes on
        assert stream.closed
        assert "No space left on device" in caplog.text
    finally:
        stream.close()


def test_a_ring_without_memory_is_refused_before_any_write(monkeypatch):
    """Allocating the ring's pages fails on a full /dev/shm: OSError and no file left
    (writing into such a mapping would kill the process). A system without the call
    (EINVAL) gets its pages by writing zeros instead."""
    import errno
    import mmap
    import tempfile

    from napari_sam2_worms.skeleton import stream as stream_mod

    made = []
    mkstemp = tempfile.mkstemp

    def recording(*args, **kwargs):
        fd, path = mkstemp(*args, **kwargs)
        made.append(path)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", recording)
    for code in (errno.ENOMEM, errno.EINVAL):

        class Advised(mmap.mmap):
            def madvise(self, *args, _code=code):
                raise OSError(_code, os.strerror(_code))

        monkeypatch.setattr(mmap, "mmap", Advised)
        if code == errno.ENOMEM:
            with pytest.raises(OSError, match="no memory for the skeleton ring"):
                stream_mod.FrameRing((8, 10), np.uint8, 4)
            assert not os.path.exists(made[-1])
        else:
            ring = stream_mod.FrameRing((8, 10), np.uint8, 4)
            assert ring.frames.shape == (4, 8, 10) and not ring.frames.any()
            ring.release()
            assert not os.path.exists(made[-1])


def test_session_starts_workers_before_propagating_and_replaces_dead_ones(small_plate):
    """Setting ``skeleton_workers`` starts the processes at once (they start while the
    user clicks); a worker that died is replaced at the next propagation; closing the
    session stops them."""
    from napari_sam2_worms.engine.session import TrackingSession
    from napari_sam2_worms.testing.oracle import OracleBackend

    session = TrackingSession(small_plate.video, OracleBackend(small_plate.labels))
    session.skeleton_workers = 2
    pool = session.skeleton_feed.pool
    assert pool is not None and pool.size == 2 and all(p.is_alive() for p in pool.procs)
    session.skeleton_workers = 2  # unchanged: the same pool
    assert session.skeleton_feed.pool is pool
    for k in (1, 2):
        session.add_object()
        xy = small_plate.centerlines[0, k - 1, 24]
        session.add_point(0, k, float(xy[0]), float(xy[1]), True)
    pool.procs[1].kill()
    pool.procs[1].join(5)
    list(session.propagate("forward"))
    assert session.skeleton_feed.pool is not pool and session.skeleton_feed.pool.usable  # replaced
    tracks = session.skeletons()
    ref = skeletonize_labels(session.labels, [1, 2], fps=session.fps)
    np.testing.assert_array_equal(tracks.points, ref.points)
    new = session.skeleton_feed.pool
    session.close()
    assert session.skeleton_feed.pool is None and not any(p.is_alive() for p in new.procs)
    session.skeleton_workers = 0


def test_streamed_frames_are_checked_whole_not_searched_again(small_plate, monkeypatch):
    """The stack loop recognises a streamed frame by its signature and takes the
    objects' boxes from the stream (no second search); an edited frame is searched
    and recomputed; either way the tracks equal the stack loop's without a cache."""
    import napari_sam2_worms.skeleton.labels as labels_mod

    labels = small_plate.labels.copy()
    stream = SkeletonStream([1, 2, 3], workers=2)
    for t, frame in enumerate(labels):
        stream.feed(t, frame)
    cache = stream.cache(timeout=120)
    stream.close()
    assert set(cache.frames) == set(range(len(labels)))
    assert cache.ids == {1, 2, 3}

    searched = []
    original = labels_mod._object_slices
    monkeypatch.setattr(labels_mod, "_object_slices", lambda f: searched.append(1) or original(f))
    got = skeletonize_labels(labels, [1, 2, 3], cache=cache)
    assert searched == []
    np.testing.assert_array_equal(got.points, skeletonize_labels(labels, [1, 2, 3]).points)
    searched.clear()

    labels[4][labels[4] == 2] = 0  # an edit after streaming
    labels[5][labels[5] == 3] = 1
    got = skeletonize_labels(labels, [1, 2, 3], cache=cache)
    assert len(searched) == 2  # only the edited frames were searched
    monkeypatch.setattr(labels_mod, "_object_slices", original)
    ref = skeletonize_labels(labels, [1, 2, 3])
    np.testing.assert_array_equal(got.points, ref.points)
    np.testing.assert_array_equal(got.reason, ref.reason)
    # objects the stream did not follow: every frame is searched
    searched.clear()
    monkeypatch.setattr(labels_mod, "_object_slices", lambda f: searched.append(1) or original(f))
    skeletonize_labels(labels, [1, 2, 3, 4], cache=cache)
    assert len(searched) == len(labels)


def test_a_frame_is_published_only_when_every_worker_told_its_part(small_plate):
    """With two workers, a frame whose boxes came from one of them would hide the
    other's objects from the stack loop: it is not used until both answered that
    feed, also when the frame was fed twice and one worker answered both feeds first."""
    from napari_sam2_worms.skeleton.labels import frame_signature

    stream = SkeletonStream([1, 2], workers=2)
    try:
        sig = frame_signature(small_plate.labels[0])
        stream._frame_info(0, 7, sig, {1: (1, 5, 2, 9)})
        stream._frame_info(1, 7, sig, {1: (1, 5, 2, 9)})  # the same frame, fed again
        assert 7 not in stream.results.frames
        stream._frame_info(0, 7, sig, {2: (3, 4, 5, 6)})
        assert stream.results.frames[7] == (
            sig,
            {1: (slice(1, 5), slice(2, 9)), 2: (slice(3, 4), slice(5, 6))},
        )
    finally:
        stream.close()


def test_wait_ready_after_a_stream_ran(small_plate):
    """Workers whose "ready" was read by a stream still count as up afterwards."""
    import time

    from napari_sam2_worms.skeleton.stream import SkeletonPool

    pool = SkeletonPool(2)
    try:
        stream = pool.stream([1])  # one object: one of the two workers
        for t in range(3):
            stream.feed(t, small_plate.labels[t])
        stream.cache(timeout=60)
        stream.close()
        t0 = time.monotonic()
        assert pool.wait_ready(timeout=30)
        assert time.monotonic() - t0 < 10
    finally:
        pool.close()


def test_frame_signature_sees_every_edit():
    """A painted pixel, an erased object, a label block moved by a whole 64-bit word
    (which an unweighted sum would miss), a trailing byte past the last whole word,
    and the type: each changes the signature; an equal copy does not."""
    from napari_sam2_worms.skeleton.labels import frame_signature

    rng = np.random.default_rng(1)
    frame = np.zeros((37, 51), np.uint8)  # 1,887 bytes: 7 past the last whole word
    frame[5:9, 8:20] = 3
    frame[20:30, 30:33] = 1
    sig = frame_signature(frame)
    assert frame_signature(frame.copy()) == sig
    edits = []
    a = frame.copy()
    a[0, 0] = 2
    edits.append(a)
    b = frame.copy()
    b[b == 1] = 0
    edits.append(b)
    c = np.zeros_like(frame)  # the block of 3s moved 8 bytes to the right
    c[5:9, 16:28] = 3
    c[20:30, 30:33] = 1
    edits.append(c)
    d = frame.copy()
    d[-1, -1] = 5
    edits.append(d)
    edits.append(frame.astype(np.uint16))
    e = frame.copy()  # +128 in the top byte of two 32-bit lanes: the largest headroom
    e.flat[3] = e.flat[7] = 128  # a plain sum of words times odd weights has least
    edits.append(e)
    for _ in range(50):
        e = frame.copy()
        e.flat[rng.integers(e.size)] ^= np.uint8(rng.integers(1, 256))
        edits.append(e)
    sigs = {frame_signature(e) for e in edits}
    assert sig not in sigs and len(sigs) == len(edits)


def test_object_boxes_are_the_stack_loops_slices(small_plate):
    """The workers' boxes for their objects (per-object comparisons for a few, one
    find_objects pass for more) equal the stack loop's slices: objects touching the
    borders, absent ids, any label type."""
    from napari_sam2_worms.skeleton import labels as labels_mod

    frames = [small_plate.labels[t] for t in range(3)]
    edge = np.zeros((20, 30), np.uint16)
    edge[0:3, 25:30] = 2  # top-right corner
    edge[19, 0] = 300  # one pixel, bottom-left
    edge[5:9, 4:6] = 1
    frames.append(edge)
    for frame in frames:
        for dtype in {frame.dtype, np.dtype(np.int32)}:
            f = frame.astype(dtype)
            full = labels_mod._object_slices(f)
            for ids in ([1], [2, 300], [1, 2, 3], [1, 2, 3, 4, 300], [7], []):
                want = {o: sl for o, sl in full.items() if o in ids}
                assert labels_mod.object_boxes(f, ids) == want


def test_stack_signatures_in_threads_match_frame_by_frame(monkeypatch):
    """The end-of-run hashing of a stack (threads where the host has cores) gives each
    frame its own signature: same as one by one, in the right frames, an edit seen."""
    from napari_sam2_worms.skeleton import labels as labels_mod

    rng = np.random.default_rng(3)
    stack = rng.integers(0, 4, (40, 24, 30), dtype=np.uint16)
    frames = list(range(3, 40))
    serial = {t: labels_mod.frame_signature(stack[t]) for t in frames}
    monkeypatch.setattr(
        labels_mod.os, "sched_getaffinity", lambda _pid: set(range(4)), raising=False
    )
    assert labels_mod._signatures(stack, frames) == serial
    stack[17, 5, 5] += 1
    threaded = labels_mod._signatures(stack, frames)
    assert [t for t in frames if threaded[t] != serial[t]] == [17]


def test_a_closed_pooled_stream_tells_its_workers_to_drop_its_frames(small_plate, tmp_path):
    """A pool's worker, after ("end", epoch), skips that stream's frames still queued
    (it used to skeletonize them for nobody); a frame sent before the end is done, and
    the next stream's frames are."""
    from collections import deque

    from napari_sam2_worms.skeleton.stream_worker import _READY, _worker

    frames = np.ascontiguousarray(small_plate.labels[:2])
    ring = (str(tmp_path / "ring.raw"), frames.shape, frames.dtype.str)
    frames.tofile(ring[0])  # the ring file, as SkeletonStream writes it

    class Conn:  # one message at a time: the worker cannot look ahead
        def __init__(self, msgs):
            self.msgs, self.sent = deque(msgs), []

        def recv(self):
            if not self.msgs:
                raise EOFError
            return self.msgs.popleft()

        def poll(self):
            return False

        def send(self, m):
            self.sent.append(m)

    conn = Conn(
        [
            ("begin", 1, {1}, 49),
            (1, 0, 0, 0, ring),  # before the end: done
            ("end", 1),
            (1, 1, 1, 1, ring),  # stale: dropped
            ("begin", 2, {1}, 49),
            (2, 0, 1, 1, ring),  # the next stream: done
            None,
        ]
    )
    _worker(conn)
    assert conn.sent[0] == _READY
    answered = [(m[0], m[1]) for m in conn.sent[1:]]
    assert answered == [(1, 0), (2, 0)]
    assert all(m[2] for m in conn.sent[1:])  # each carried object 1's skeleton


def test_a_ring_dropped_without_release_takes_its_file_along():
    import gc
    import os

    from napari_sam2_worms.skeleton.stream import FrameRing

    ring = FrameRing((16, 16), np.uint16, 4)
    path = ring.path
    assert os.path.exists(path) and f"nsw-skeleton-ring-{os.getpid()}-" in path
    del ring
    gc.collect()
    assert not os.path.exists(path)

"""Semantics of the tracking session, pinned with the oracle backend (ground truth answers)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_sam2_worms.backends.base import BadPromptError
from napari_sam2_worms.engine.session import TrackingSession
from napari_sam2_worms.testing.oracle import OracleBackend


@pytest.fixture
def session(small_plate, video_stub):
    video = video_stub(small_plate.video)
    return TrackingSession(video, OracleBackend(small_plate.labels))


def _click(session, plate, frame, obj, gt_id=None):
    x, y = plate.head_points(frame)[gt_id or obj]
    return session.add_point(frame, obj, x, y)


def test_click_gives_mask_on_that_frame_only(session, small_plate):
    a = session.add_object()
    _click(session, small_plate, 3, a)
    assert np.array_equal(session.labels[3] == a, small_plate.labels[3] == a)
    assert not session.labels[[0, 1, 2, 4]].any()
    assert session.user_frames() == [3]
    assert session.objects[a].name == "worm1"


def test_propagate_forward_backward_both(session, small_plate):
    a, b = session.add_object(), session.add_object()
    _click(session, small_plate, 5, a)
    _click(session, small_plate, 5, b)
    steps = list(session.propagate("forward"))
    assert [s.frame for s in steps] == list(range(5, 12))
    assert steps[-1].done == steps[-1].total == 7
    assert not session.labels[:5].any()
    steps = list(session.propagate("backward"))
    assert [s.frame for s in steps] == list(range(5, -1, -1))
    for o in (a, b):
        assert np.array_equal(session.labels == o, small_plate.labels == o)
    assert np.isfinite(session.score_table()[1]).all()


def test_both_directions_and_range(session, small_plate):
    a = session.add_object()
    _click(session, small_plate, 6, a)
    frames = [s.frame for s in session.propagate("both", start=2, stop=9)]
    assert frames == [6, 7, 8, 9, 6, 5, 4, 3, 2]
    assert not session.labels[[0, 1, 10, 11]].any()


def test_cancel_keeps_done_frames(session, small_plate):
    a = session.add_object()
    _click(session, small_plate, 0, a)
    stop = threading.Event()
    done = []
    for step in session.propagate("forward", cancel=stop):
        done.append(step.frame)
        if step.frame == 4:
            stop.set()
    assert done == [0, 1, 2, 3, 4]
    assert session.labels[4].any() and not session.labels[5:].any()
    # still usable: continue from where we stopped
    rest = [s.frame for s in session.propagate("forward", start=5)]
    assert rest == list(range(5, 12))


def test_correction_runs_only_to_next_user_frame(session, small_plate):
    a = session.add_object()
    _click(session, small_plate, 0, a)
    _click(session, small_plate, 8, a)
    list(session.propagate("forward"))
    oracle = session.backend
    oracle.propagated.clear()
    # the user fixes frame 4 with a painted mask
    painted = small_plate.labels[4] == 2  # deliberately a different shape
    session.set_mask(4, a, painted)
    assert session.correction_range(4, "forward") == (4, 7)
    assert session.correction_range(4, "backward") == (4, 1)
    list(session.repropagate_from(4, "forward"))
    assert oracle.propagated == [4, 5, 6, 7]
    # user edits win: the painted frame is kept, frame 8 (prompted) untouched
    assert np.array_equal(session.labels[4] == a, painted)
    assert np.array_equal(session.labels[8] == a, small_plate.labels[8] == a)


def test_propagation_never_overwrites_user_frames(session, small_plate):
    a = session.add_object()
    _click(session, small_plate, 0, a)
    painted = np.zeros(small_plate.labels.shape[1:], bool)
    painted[10:20, 10:20] = True
    session.set_mask(5, a, painted)
    list(session.propagate("forward"))
    assert np.array_equal(session.labels[5] == a, painted)
    assert np.array_equal(session.labels[6] == a, small_plate.labels[6] == a)


def test_overlap_rule_user_edit_wins_then_score(session, small_plate):
    a, b = session.add_object(), session.add_object()
    _click(session, small_plate, 0, a)
    # b paints a mask overlapping a's animal on frame 0: user edits win over model output
    overlap = small_plate.labels[0] == 1
    session.set_mask(0, b, overlap)  # the latest user edit wins on its frame
    assert overlap.any() and (session.labels[0][overlap] == b).all()
    # on frame 1 b's painted mask is the user's: a's model mask may not take its pixels
    session.set_mask(1, b, small_plate.labels[1] == 1)
    list(session.propagate("forward", start=0, stop=2))
    assert (session.labels[1][small_plate.labels[1] == 1] == b).all()
    # where nobody edited: both track animal 1 with equal scores, so the lower id wins
    assert (session.labels[2] == a).sum() == (small_plate.labels[2] == 1).sum()


def test_bad_prompt_keeps_previous_state(session, small_plate):
    a = session.add_object()
    _click(session, small_plate, 2, a)
    before = session.labels.copy()
    with pytest.raises(BadPromptError, match="background"):
        session.add_point(2, a, 1.0, 1.0)
    assert np.array_equal(session.labels, before)
    assert len(session.prompts.points[(2, a)]) == 1
    with pytest.raises(BadPromptError, match="outside"):
        session.add_point(2, a, 10_000, 5)
    with pytest.raises(BadPromptError, match="no prompts"):
        TrackingSession(session.video, OracleBackend(small_plate.labels)).propagate().__next__()


def test_objects_added_after_propagation_removed_renamed(session, small_plate):
    a = session.add_object()
    _click(session, small_plate, 0, a)
    list(session.propagate())
    b = session.add_object(name="late")
    _click(session, small_plate, 0, b)
    list(session.propagate())
    assert np.array_equal(session.labels == b, small_plate.labels == b)
    session.rename_object(b, "crossing worm")
    assert session.objects[b].name == "crossing worm"
    session.remove_object(a)
    assert not (session.labels == a).any()
    assert a not in session.score_table()[0]


def test_remove_point_restores_mask_of_remaining_prompts(session, small_plate):
    a = session.add_object()
    x, y = small_plate.head_points(0)[1]
    session.add_point(0, a, x, y)
    good = session.labels[0].copy()
    session.add_point(0, a, x, y, positive=False)  # wrong negative click
    assert not (session.labels[0] == a).any()
    session.remove_point(0, a, 1)
    assert np.array_equal(session.labels[0], good)


def test_clear_prompts_frees_frame(session, small_plate):
    a = session.add_object()
    _click(session, small_plate, 0, a)
    _click(session, small_plate, 4, a)
    session.clear_prompts(4)
    assert session.user_frames() == [0]
    assert session.correction_range(1, "forward") == (1, 11)


def test_ids_past_255_switch_to_uint16(session):
    assert session.labels.dtype == np.uint8
    session.add_object(object_id=300)
    assert session.labels.dtype == np.uint16


def test_undo_wrong_click_marks_only_stale_window(session, small_plate):
    a = session.add_object()
    x, y = small_plate.head_points(0)[1]
    session.add_point(0, a, x, y)
    session.add_point(8, a, *small_plate.head_points(8)[1])
    list(session.propagate("forward"))
    assert session.stale_window() is None
    # a wrong negative click on frame 3, then the user deletes it
    xs, ys = small_plate.head_points(3)[1]
    session.add_point(3, a, xs, ys)
    session.add_point(3, a, xs, ys, positive=False)
    assert session.stale_window() == (1, 7)  # between user frames 0 and 8
    session.remove_point(3, a, 1)
    assert np.array_equal(session.labels[3] == a, small_plate.labels[3] == 1)
    oracle = session.backend
    oracle.propagated.clear()
    list(session.repropagate_from(3, "both"))
    assert sorted(oracle.propagated) == [1, 2, 3, 3, 4, 5, 6, 7]
    assert session.stale_window() is None
    assert np.array_equal(session.labels == a, small_plate.labels == 1)


def _same_tracks(a, b):
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.reason, b.reason)
    for name in b.features:
        np.testing.assert_array_equal(a.features[name], b.features[name])


def test_streamed_skeletons_equal_the_stack_loop_and_are_reused(session, small_plate, monkeypatch):
    import napari_sam2_worms.skeleton.labels as labels_mod
    from napari_sam2_worms.skeleton import skeletonize_labels

    computed = []  # skeletons computed in this process (the stream's run in workers)
    original = labels_mod.skeleton_item
    monkeypatch.setattr(
        labels_mod, "skeleton_item", lambda *a: computed.append(a[1]) or original(*a)
    )
    session.skeleton_workers = 1
    for k in (1, 2, 3):
        session.add_object()
        _click(session, small_plate, 0, k)
    list(session.propagate("forward"))
    assert session.skeleton_feed.stream is not None
    tracks = session.skeletons()
    assert computed == []  # all reused
    cache = session.skeleton_feed.cache
    present = {(t, o) for t in range(12) for o in (1, 2, 3) if (session.labels[t] == o).any()}
    assert set(cache) == present  # every frame was skeletonized while tracking
    _same_tracks(tracks, skeletonize_labels(session.labels, [1, 2, 3], fps=session.fps))

    # a painted edit: that entry no longer matches and is recomputed, the rest reused
    session.labels[6][session.labels[6] == 2] = 0
    computed.clear()
    again = session.skeletons()
    assert 0 < len(computed) < len(present)
    _same_tracks(again, skeletonize_labels(session.labels, [1, 2, 3], fps=session.fps))

    # a backward run cannot be streamed: what the forward run made is kept (used only
    # where its keys still match), results stay exact
    kept = len(session.skeleton_feed.cache)
    list(session.propagate("backward", start=5))
    assert session.skeleton_feed.stream is None and len(session.skeleton_feed.cache) == kept
    _same_tracks(
        session.skeletons(), skeletonize_labels(session.labels, [1, 2, 3], fps=session.fps)
    )


def test_streamed_results_survive_a_later_propagation(session, small_plate, monkeypatch):
    """A second run (here from frame 6, which cannot be streamed: objects lie on the
    frames before it) keeps the first run's skeletons; the oracle writes the same masks
    again, so nothing is recomputed."""
    import napari_sam2_worms.skeleton.labels as labels_mod
    from napari_sam2_worms.skeleton import skeletonize_labels

    computed = []
    original = labels_mod.skeleton_item
    monkeypatch.setattr(
        labels_mod, "skeleton_item", lambda *a: computed.append(a[1]) or original(*a)
    )
    session.skeleton_workers = 1
    for k in (1, 2):
        session.add_object()
        _click(session, small_plate, 0, k)
    list(session.propagate("forward"))
    list(session.propagate("forward", start=6))
    assert session.skeleton_feed.stream is None and session.skeleton_feed.cache
    tracks = session.skeletons()
    assert computed == []
    _same_tracks(tracks, skeletonize_labels(session.labels, [1, 2], fps=session.fps))


def test_merged_stream_caches_take_nothing_old_on_frames_the_new_one_touched():
    from napari_sam2_worms.skeleton.labels import StreamedSkeletons, merge_streamed

    old = StreamedSkeletons([1, 2, 3])
    old.update({(0, 1): "a0", (1, 1): "a1", (1, 2): "a1b"})
    old.frames.update({0: ("sig0", {}), 1: ("sig1", {})})
    new = StreamedSkeletons([1, 2])
    new.update({(1, 1): "b1"})  # frame 1 again, without object 2, no frame check yet
    merged = merge_streamed(old, new)
    assert dict(merged) == {(0, 1): "a0", (1, 1): "b1"}
    assert merged.frames == {0: ("sig0", {})}
    assert merged.ids_for(0) == frozenset({1, 2, 3})  # each check keeps its stream's objects
    assert merge_streamed({}, new).ids == new.ids
    # a later stream with more objects: its frames are checked for all of them, the
    # older frames only for the objects the older stream followed
    newest = StreamedSkeletons([1, 2, 3, 4])
    newest.frames[5] = ("sig5", {})
    both = merge_streamed(merged, newest)
    assert both.ids_for(5) == frozenset({1, 2, 3, 4}) and both.ids_for(0) == frozenset({1, 2, 3})


def test_fast_path_per_frame_after_an_object_was_added(small_plate, monkeypatch):
    """Frames streamed for objects {1, 2} and frames streamed for {1} only, in one merged
    cache: skeletons of [1, 2] search only the latter again, and equal the stack loop."""
    import napari_sam2_worms.skeleton.labels as labels_mod
    from napari_sam2_worms.skeleton.labels import (
        StreamedSkeletons,
        frame_signature,
        merge_streamed,
        skeletonize_labels,
    )

    labels = small_plate.labels[:8].copy()
    labels[~np.isin(labels, [1, 2])] = 0
    first, second = StreamedSkeletons([1]), StreamedSkeletons([1, 2])
    for t in range(8):
        target = first if t < 4 else second
        target.frames[t] = (frame_signature(labels[t]), labels_mod._object_slices(labels[t]))
    cache = merge_streamed(first, second)
    searched = []
    original = labels_mod._object_slices
    monkeypatch.setattr(labels_mod, "_object_slices", lambda f: searched.append(1) or original(f))
    tracks = skeletonize_labels(labels, [1, 2], cache=cache)
    assert len(searched) == 4  # frames 0-3: checked for object 1 only
    ref = skeletonize_labels(labels, [1, 2])
    np.testing.assert_array_equal(tracks.points, ref.points)


def test_auto_workers_only_for_long_videos():
    from napari_sam2_worms.skeleton.stream import STREAM_MIN_FRAMES, auto_workers

    assert auto_workers(STREAM_MIN_FRAMES - 1) == 0
    assert 1 <= auto_workers(STREAM_MIN_FRAMES) <= 4

"""Identity swaps: the session's swap operation and the "identity suspect" flag.

The swap is pinned with the oracle backend (ground truth answers) and the classic
backend (a real tracker: a re-propagation must keep the fix); the flag with the
synthetic plate, whose worms 2 and 3 cross.
"""

from __future__ import annotations

import numpy as np
import pytest

from fixtures.plates import swapped
from napari_sam2_worms.backends.classic import ClassicBackend
from napari_sam2_worms.engine.session import TrackingSession
from napari_sam2_worms.engine.session_io import load_session, save_session
from napari_sam2_worms.skeleton import skeletonize_labels
from napari_sam2_worms.skeleton.identity import (
    IDENTITY_SUSPECT,
    identity_suspects,
)
from napari_sam2_worms.testing.oracle import OracleBackend


def _tracked(video_stub, video, truth, frame=0):
    """An oracle session: one object per ground-truth worm, clicked on ``frame``, tracked."""
    s = TrackingSession(video_stub(video), OracleBackend(truth))
    for gt in np.unique(truth[frame])[1:]:
        obj = s.add_object()
        rows, cols = np.nonzero(truth[frame] == gt)
        i = len(rows) // 2
        s.add_point(frame, obj, float(cols[i]), float(rows[i]))
    list(s.propagate("forward"))
    return s


# -- the swap ------------------------------------------------------------------------------
def test_swap_to_the_end_moves_masks_scores_prompts_and_flips(small_plate, video_stub):
    s = _tracked(video_stub, small_plate.video, small_plate.labels)
    a, b, k = 1, 2, 5
    s.add_point(8, a, *small_plate.head_points(8)[1])  # a user click after k
    s.add_point(k, b, *small_plate.head_points(k)[2])  # and one on k
    s.scores[a][k:] = 1.0
    s.scores[b][k:] = 2.0
    s.flips.append((a, 2, 9))  # a flip across k
    before = s.labels.copy()
    result = s.swap_identities(a, b, k)
    assert (result.start, result.stop) == (k, s.n_frames - 1)
    assert np.array_equal(s.labels, swapped(before, a, b, k))
    assert np.array_equal(s.labels[:k], before[:k])
    assert (s.scores[a][k:] == 2.0).all() and (s.scores[b][k:] == 1.0).all()
    # the click on the animal follows the animal
    assert (8, b) in s.prompts.points and (8, a) not in s.prompts.points
    assert (k, a) in s.prompts.points  # the click on k is kept (beside the mask prompt)
    assert s.prompts.points[(0, a)] and (0, b) in s.prompts.points  # before k: unchanged
    # the flip splits: a keeps 2..k-1, b gets k..9
    assert sorted(s.flips) == [(a, 2, k - 1), (b, k, 9)]
    # the swapped masks on k are both objects' prompts, sent to the backend
    assert result.pinned == [(k, a), (k, b)] and not result.unpinned
    for obj in (a, b):
        assert np.array_equal(s.prompts.masks[(k, obj)], s.labels[k] == obj)
        assert s.is_user_edited(k, obj)
        assert s.backend.prompts[(k, obj)].mask is not None
    assert (8, b) in s.backend.prompts and (8, a) not in s.backend.prompts
    assert s.settings["identity_swaps"] == [{"a": a, "b": b, "start": k, "stop": s.n_frames - 1}]


def test_swap_range_pins_both_ends(small_plate, video_stub):
    s = _tracked(video_stub, small_plate.video, small_plate.labels)
    before = s.labels.copy()
    result = s.swap_identities(3, 1, 4, 7)
    assert np.array_equal(s.labels, swapped(before, 1, 3, 4, 7))
    assert np.array_equal(s.labels[8:], before[8:])
    assert sorted(result.pinned) == [(4, 1), (4, 3), (8, 1), (8, 3)]
    # after the range each object is itself again: the pin there is its own mask
    assert np.array_equal(s.prompts.masks[(8, 1)], before[8] == 1)
    # a correction before the swap stops at the swap's anchor
    assert s.correction_range(2, "forward") == (2, 3)


def test_swapping_twice_restores_the_masks(small_plate, video_stub):
    s = _tracked(video_stub, small_plate.video, small_plate.labels)
    before, scores = s.labels.copy(), {o: v.copy() for o, v in s.scores.items()}
    s.swap_identities(1, 2, 3)
    s.swap_identities(2, 1, 3)
    assert np.array_equal(s.labels, before)
    for o in s.objects:
        np.testing.assert_array_equal(s.scores[o], scores[o])


def test_swap_refuses_bad_requests(small_plate, video_stub):
    s = _tracked(video_stub, small_plate.video, small_plate.labels)
    before = s.labels.copy()
    with pytest.raises(ValueError, match="two different objects"):
        s.swap_identities(1, 1, 3)
    with pytest.raises(KeyError, match="no object 9"):
        s.swap_identities(1, 9, 3)
    with pytest.raises(IndexError, match="outside the video"):
        s.swap_identities(1, 2, 40)
    with pytest.raises(ValueError, match="empty"):
        s.swap_identities(1, 2, 6, 4)
    assert np.array_equal(s.labels, before)
    assert "identity_swaps" not in s.settings


def test_object_absent_on_the_first_frame_is_reported_unpinned(small_plate, video_stub):
    s = _tracked(video_stub, small_plate.video, small_plate.labels)
    s.labels[5][s.labels[5] == 2] = 0  # lost on frame 5
    result = s.swap_identities(1, 2, 5)
    assert result.unpinned == [(5, 1)]  # after the swap, 1 is the lost one
    assert (5, 1) not in s.prompts.masks and (5, 2) in s.prompts.masks


def test_swap_is_saved_and_reopened(small_plate, video_stub, tmp_path):
    s = _tracked(video_stub, small_plate.video, small_plate.labels)
    s.flips.append((1, 0, 11))
    s.swap_identities(1, 2, 6)
    save_session(s, tmp_path / "sess")
    video = video_stub(small_plate.video)
    r = load_session(tmp_path / "sess", OracleBackend(small_plate.labels), video=video)
    assert np.array_equal(r.labels, s.labels)
    assert sorted(r.flips) == sorted(s.flips) == [(1, 0, 5), (2, 6, 11)]
    assert sorted(r.prompts.masks) == [(6, 1), (6, 2)]
    assert r.settings["identity_swaps"] == s.settings["identity_swaps"]
    # the reopened backend gets the anchors with the other prompts, at the next click
    r.add_point(6, 3, *small_plate.head_points(6)[3])
    for obj in (1, 2):
        np.testing.assert_array_equal(r.backend.prompts[(6, obj)].mask, s.labels[6] == obj)


def test_skeletons_and_exports_follow_the_swap(small_plate, video_stub, tmp_path):
    from napari_sam2_worms.export import export_tracks
    from napari_sam2_worms.skeleton import read_csv

    s = _tracked(video_stub, small_plate.video, small_plate.labels)
    k = 4
    old = s.skeletons()
    s.swap_identities(1, 3, k)
    new = s.skeletons()
    fresh = skeletonize_labels(swapped(small_plate.labels, 1, 3, k), [1, 2, 3], fps=s.fps)
    np.testing.assert_array_equal(new.points, fresh.points)
    ia, ib = new.index_of(1), new.index_of(3)
    np.testing.assert_allclose(new.features["area"][k:, ia], old.features["area"][k:, ib])
    np.testing.assert_allclose(new.features["area"][:k, ia], old.features["area"][:k, ia])
    path = export_tracks(new, tmp_path / "tracks.csv", "csv")
    back = read_csv(path)
    np.testing.assert_allclose(
        back.features["length"][k:, back.index_of(1)],
        old.features["length"][k:, old.index_of(3)],
        rtol=1e-4,
    )


def _identities(labels: np.ndarray, truth: np.ndarray, objects) -> np.ndarray:
    """(T, K) the ground-truth animal each object covers most on each frame (0: absent)."""
    out = np.zeros((len(labels), len(objects)), int)
    for t in range(len(labels)):
        for j, o in enumerate(objects):
            under = truth[t][labels[t] == o]
            under = under[under > 0]
            if len(under):
                out[t, j] = np.bincount(under).argmax()
    return out


def test_classic_repropagation_keeps_the_fix(small_plate, video_stub):
    """A real tracker: after the swap, re-running tracking (from the start, or from a
    frame after the swap) carries the swapped identities, not the old ones."""
    truth = small_plate.labels
    s = TrackingSession(video_stub(small_plate.video), ClassicBackend())
    for _gt, (x, y) in small_plate.head_points(0).items():
        s.add_point(0, s.add_object(), x, y)
    list(s.propagate("forward"))
    tracked = s.labels.copy()
    ids = _identities(tracked, truth, [1, 2, 3])
    assert (ids == [1, 2, 3]).all()  # the classic tracker got them right
    k = 5
    s.swap_identities(1, 2, k)
    want = ids.copy()
    want[k:, [0, 1]] = want[k:, [1, 0]]
    assert (_identities(s.labels, truth, [1, 2, 3]) == want).all()
    s.labels[k + 1 :] = 0  # forget the frames after k: recompute them from the start
    list(s.propagate("forward"))
    # where an object is found it is the swapped animal, never the old one; all are
    # found at the end. (Here the swap makes tracks 1 and 2 jump between two worms far
    # apart, and classic's velocity across the jump makes it miss them on some frames
    # after k; at a real crossing the swap makes the tracks continuous.)
    got = _identities(s.labels, truth, [1, 2, 3])
    assert ((got == want) | (got == 0)).all() and (got[-1] == want[-1]).all()
    assert (got[k:, 2] == 3).all() and (got[k:] != 0).sum() >= 2 * (s.n_frames - k)
    s.labels[k + 1 :] = 0
    list(s.repropagate_from(k + 1, "forward"))  # from a frame after the swap
    got = _identities(s.labels, truth, [1, 2, 3])
    assert ((got == want) | (got == 0)).all() and (got[-1] == want[-1]).all()
    assert (got[k:] != 0).sum() >= 2 * (s.n_frames - k)


def test_without_the_anchor_prompts_classic_brings_the_old_identities_back(small_plate, video_stub):
    """The control of the test above: swapping the masks alone does not survive."""
    s = TrackingSession(video_stub(small_plate.video), ClassicBackend())
    for _gt, (x, y) in small_plate.head_points(0).items():
        s.add_point(0, s.add_object(), x, y)
    list(s.propagate("forward"))
    tracked = s.labels.copy()
    s.labels[:] = swapped(tracked, 1, 2, 5)
    list(s.propagate("forward"))
    assert np.array_equal(s.labels, tracked)


# -- the identity suspect flag --------------------------------------------------------------
def test_flag_fires_after_a_swapped_crossing_and_not_on_the_truth(crossing):
    _, truth, after = crossing
    tracks = skeletonize_labels(truth, fps=15.0)
    assert not (tracks.reason == IDENTITY_SUSPECT).any()
    events = identity_suspects(tracks, truth)
    assert [(e.a, e.b, e.suspect) for e in events] == [(2, 3, False)]
    assert events[0].frame == after and events[0].cost_keep < events[0].cost_swap

    for k in (after, after - 10):  # swapped at the parting, or inside the contact
        wrong = swapped(truth, 2, 3, k)
        tracks = skeletonize_labels(wrong, fps=15.0)
        flagged = np.argwhere(tracks.reason == IDENTITY_SUSPECT)
        assert [(int(t), int(tracks.object_ids[j])) for t, j in flagged] == [
            (after, 2),
            (after, 3),
        ]
        assert not tracks.good[after, [tracks.index_of(2), tracks.index_of(3)]].any()
    # a swap of two worms that never touch is no contact episode: nothing to say
    tracks = skeletonize_labels(swapped(truth, 1, 2, after), fps=15.0)
    assert not (tracks.reason == IDENTITY_SUSPECT).any()


def test_flag_leads_to_the_swap_that_clears_it(crossing, video_stub, tmp_path):
    """The user's loop: a tracker swapped 2 and 3 at the crossing; the review shows the
    flag (and the export its reason); swapping from the flagged frame fixes the labels
    and the flag goes away."""
    from napari_sam2_worms.export import export_tracks
    from napari_sam2_worms.skeleton import read_csv

    video, truth, after = crossing
    wrong = swapped(truth, 2, 3, after - 4)  # what the tracker did
    s = _tracked(video_stub, video, wrong)
    tracks = s.skeletons()
    flagged = {
        (int(t), int(tracks.object_ids[j]))
        for t, j in np.argwhere(tracks.reason == IDENTITY_SUSPECT)
    }
    assert flagged == {(after, 2), (after, 3)}
    back = read_csv(export_tracks(tracks, tmp_path / "wrong.csv", "csv"))
    assert back.reason[after, back.index_of(2)] == IDENTITY_SUSPECT

    s.swap_identities(2, 3, after)
    assert np.array_equal(s.labels[after:], truth[after:])
    assert not (s.skeletons().reason == IDENTITY_SUSPECT).any()


def test_skeletons_cached_while_tracking_follow_the_swap(small_plate, video_stub):
    """The skeleton workers' results (made while tracking) are not reused for the
    swapped masks: the tracks equal those of the swapped label stack."""
    s = TrackingSession(video_stub(small_plate.video), OracleBackend(small_plate.labels))
    s.skeleton_workers = 1
    try:
        for _gt, (x, y) in small_plate.head_points(0).items():
            s.add_point(0, s.add_object(), x, y)
        list(s.propagate("forward"))
        assert s.skeleton_feed.stream is not None
        s.skeletons()
        s.swap_identities(1, 2, 6)
        tracks = s.skeletons()
        fresh = skeletonize_labels(swapped(small_plate.labels, 1, 2, 6), [1, 2, 3], fps=s.fps)
        np.testing.assert_array_equal(tracks.points, fresh.points)
        np.testing.assert_array_equal(tracks.reason, fresh.reason)
    finally:
        s.close()


def test_a_backend_failure_leaves_the_swap_done_and_the_prompts_resent_later(
    small_plate, video_stub, monkeypatch
):
    s = _tracked(video_stub, small_plate.video, small_plate.labels)
    before = s.labels.copy()
    backend = s.backend

    def fail(*args):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(backend, "set_prompts", fail)
    result = s.swap_identities(1, 2, 4)
    assert result.backend_error == "CUDA out of memory"
    assert np.array_equal(s.labels, swapped(before, 1, 2, 4))
    monkeypatch.undo()
    assert not backend.prompts  # reset: nothing half-sent is kept
    s.add_point(4, 3, *small_plate.head_points(4)[3])  # the next use hands every prompt
    assert backend.prompts[(4, 1)].mask is not None and (0, 1) in backend.prompts

"""The identity suspect flag on a real recording: two flies in close contact, tracked by
the classic backend, checked against the user-labelled identities of ``clip.slp``."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import need_shared
from napari_sam2_worms.backends.classic import ClassicBackend
from napari_sam2_worms.engine.session import TrackingSession
from napari_sam2_worms.skeleton.identity import IDENTITY_SUSPECT, identity_suspects
from napari_sam2_worms.video import ArrayVideo, open_video

FIRST, LAST = 1160, 1279  # the flies touch on 1173-1194 and 1220-1263


def _truth_centroids(path) -> np.ndarray:
    """(T, 2, 2) the (x, y) mean of each labelled fly's nodes, by track."""
    import sleap_io as sio

    labels = sio.load_slp(str(path))
    out = np.full((1500, 2, 2), np.nan)
    for lf in labels.labeled_frames:
        for inst in lf.instances:
            out[lf.frame_idx, labels.tracks.index(inst.track)] = np.nanmean(inst.numpy(), 0)
    return out


@pytest.mark.slow
def test_no_identity_suspect_where_the_flies_kept_their_identities():
    pytest.importorskip("sleap_io")
    folder = need_shared("flies_identity")
    truth = _truth_centroids(folder / "clip.slp")[FIRST : LAST + 1]
    video = open_video(folder / "clip.mp4")
    frames = np.stack([np.asarray(video[i]) for i in range(FIRST, LAST + 1)])
    s = TrackingSession(ArrayVideo(frames, fps=video.fps), ClassicBackend())
    for k in range(2):
        s.add_point(0, s.add_object(), *truth[0, k])
    list(s.propagate("forward"))
    tracks = s.skeletons()
    xy = np.stack([tracks.features["centroid_x"], tracks.features["centroid_y"]], -1)
    keep = np.linalg.norm(xy - truth, axis=-1).sum(1)
    cross = np.linalg.norm(xy - truth[:, ::-1], axis=-1).sum(1)
    assert np.isfinite(keep).all()
    assert (keep < cross).all()  # the tracker kept the identities through every contact
    events = identity_suspects(tracks, s.labels)
    assert len(events) >= 2  # the contacts are found...
    assert not any(e.suspect for e in events)  # ...and none is called a swap
    assert not (tracks.reason == IDENTITY_SUSPECT).any()
    # swapping after the first contact crosses the identities from there on, on real masks
    k = events[0].frame
    s.swap_identities(1, 2, k)
    after = s.skeletons()
    xy = np.stack([after.features["centroid_x"], after.features["centroid_y"]], -1)
    keep = np.linalg.norm(xy - truth, axis=-1).sum(1)
    cross = np.linalg.norm(xy - truth[:, ::-1], axis=-1).sum(1)
    assert (keep[:k] < cross[:k]).all() and (cross[k:] < keep[k:]).all()

"""Head/tail flips through the session's API: the tracks every export writes are flipped
on exactly the frames asked; bad requests are refused and change nothing."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2_worms.engine.session import TrackingSession
from napari_sam2_worms.testing.oracle import OracleBackend


def test_flip_head_tail_flips_the_exported_skeletons(small_plate, video_stub):
    s = TrackingSession(video_stub(small_plate.video), OracleBackend(small_plate.labels))
    for gt in (1, 2, 3):
        rows, cols = np.nonzero(small_plate.labels[0] == gt)
        s.add_point(0, s.add_object(), float(cols[len(cols) // 2]), float(rows[len(rows) // 2]))
    list(s.propagate("forward"))
    before = s.skeletons()
    assert s.flip_head_tail(2, 7, 4) == (4, 7)  # either order
    assert s.flips == [(2, 4, 7)]
    after = s.skeletons()
    k = after.index_of(2)
    for f in range(s.n_frames):
        want = before.points[f, k, ::-1] if 4 <= f <= 7 else before.points[f, k]
        np.testing.assert_array_equal(after.points[f, k], want)
    for other in (1, 3):
        j = after.index_of(other)
        np.testing.assert_array_equal(after.points[:, j], before.points[:, j])
    with pytest.raises(KeyError, match="no object 9"):
        s.flip_head_tail(9, 0, 1)
    with pytest.raises(IndexError, match="outside the video"):
        s.flip_head_tail(1, 0, s.n_frames)
    assert s.flips == [(2, 4, 7)]

"""Undo a wrong click with the real SAM 2 predictor (random weights: semantics only)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
from napari_sam2_worms.engine.session import TrackingSession


@pytest.mark.slow
def test_removing_wrong_negative_point_restores_mask(sam2_random, small_plate, video_stub):
    backend = Sam2Backend(device="cpu", predictor=sam2_random.predictor)
    video = video_stub(small_plate.video[:4])
    s = TrackingSession(video, backend)
    a = s.add_object()
    s.add_point(1, a, *small_plate.head_points(1)[1])
    list(s.propagate("forward"))
    before = s.labels.copy()
    scores_before = s.scores[a].copy()
    x, y = small_plate.head_points(1)[2]
    s.add_point(1, a, x + 0.5, y + 0.5, positive=False)
    assert s.stale_window() == (2, 3)
    s.remove_point(1, a, 1)
    assert np.array_equal(s.labels[1], before[1])
    list(s.repropagate_from(1, "forward"))
    assert s.stale_window() is None
    assert np.array_equal(s.labels, before)
    np.testing.assert_allclose(s.scores[a], scores_before, rtol=1e-5)
    s.close()

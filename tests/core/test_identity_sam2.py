"""Swap identities with the real SAM 2 predictor (random weights: semantics only)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
from napari_sam2_worms.engine.session import TrackingSession


@pytest.mark.slow
def test_swapped_masks_become_sam2_mask_prompts(sam2_random, small_plate, video_stub):
    backend = Sam2Backend(device="cpu", predictor=sam2_random.predictor)
    s = TrackingSession(video_stub(small_plate.video[:3]), backend)
    a, b = s.add_object(), s.add_object()
    heads = small_plate.head_points(0)
    s.add_point(0, a, *heads[1])
    s.add_point(0, b, *heads[2])
    list(s.propagate("forward"))
    k = 1
    # random weights: make sure both objects have a mask on k to swap
    s.labels[k] = np.where(small_plate.labels[k] <= 2, small_plate.labels[k], 0)
    before = s.labels.copy()
    result = s.swap_identities(a, b, k)
    assert sorted(result.pinned) == [(k, a), (k, b)]
    state = backend.state
    for obj, was in ((a, b), (b, a)):
        want = before[k] == was
        np.testing.assert_array_equal(s.labels[k] == obj, want)
        # sent through sam2's mask path: a mask input of that object on frame k
        idx = state["obj_id_to_idx"][obj]
        mask_in = state["mask_inputs_per_obj"][idx].get(k)
        assert mask_in is not None
        assert backend._prompts[(k, obj)].mask is not None
        np.testing.assert_array_equal(backend._prompts[(k, obj)].mask, want)
        # the clicks on frame 0 stay with their objects (before the swap)
        assert state["point_inputs_per_obj"][idx].get(0) is not None
    # a later propagation runs from the new prompts; the pinned frame keeps the masks
    list(s.propagate("forward", start=k))
    for obj, was in ((a, b), (b, a)):
        np.testing.assert_array_equal(s.labels[k] == obj, before[k] == was)
    s.close()

"""One-index-image results (what the SAM 2 backend sends from the GPU): same label stack
as per-object masks, whatever the user edits on the frame."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2_worms.backends.base import FrameResult, LabelMasks
from napari_sam2_worms.engine.session import TrackingSession
from napari_sam2_worms.testing.oracle import OracleBackend


def test_label_masks_behaves_as_a_dict_of_masks():
    index = np.array([[0, 1, 2], [2, 2, 0]], np.uint8)
    lm = LabelMasks(index, [7, 3])
    assert list(lm) == [7, 3] and len(lm) == 2 and lm.plain()
    np.testing.assert_array_equal(lm[7], index == 1)
    np.testing.assert_array_equal(lm[3], index == 2)
    with pytest.raises(KeyError):
        lm[5]
    painted = np.ones_like(index, bool)
    lm[5] = painted
    assert not lm.plain() and lm[5] is painted and sorted(lm) == [3, 5, 7]
    del lm[7]
    assert sorted(lm) == [3, 5]
    with pytest.raises(KeyError):
        del lm[7]


@pytest.mark.parametrize("seed", range(6))
def test_index_result_writes_what_per_object_masks_write(small_plate, video_stub, seed):
    rng = np.random.default_rng(seed)
    sessions = [
        TrackingSession(video_stub(small_plate.video), OracleBackend(small_plate.labels))
        for _ in range(2)
    ]
    h, w = small_plate.video.shape[1:3]
    f = 4
    before = rng.integers(0, 7, (h, w)).astype(np.uint8)  # objects 1..6 already there
    edited = rng.choice(np.arange(1, 7), size=rng.integers(0, 3), replace=False)
    sent = [int(o) for o in rng.permutation(np.arange(1, 9))[: rng.integers(1, 8)]]
    index = rng.integers(0, len(sent) + 1, (h, w)).astype(np.uint8)
    scores = {o: float(rng.normal()) for o in sent}
    for s in sessions:
        for _ in range(6):
            s.add_object()
        s.labels[f] = before
        for o in edited:
            s.prompts.points[(f, int(o))] = [(1.0, 1.0, True)]
    as_dict = FrameResult(f, {o: index == k + 1 for k, o in enumerate(sent)}, scores)
    as_index = FrameResult(f, LabelMasks(index, sent), scores)
    sessions[0]._write(as_dict)
    sessions[1]._write(as_index)
    np.testing.assert_array_equal(sessions[1].labels[f], sessions[0].labels[f])
    for o in sessions[0].objects:
        np.testing.assert_array_equal(sessions[1].scores[o], sessions[0].scores[o])
    assert (sessions[1].labels[f] != before).any()  # the write did something

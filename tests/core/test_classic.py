"""The classic (weights-free) backend: segmentation quality, identities, prompts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from conftest import need_shared
from napari_sam2_worms.backends.base import Backend, BadPromptError, ObjectPrompts
from napari_sam2_worms.backends.classic import ClassicBackend, detect_worms
from napari_sam2_worms.synthetic import make_plate

if TYPE_CHECKING:
    from pathlib import Path


def click(x: float, y: float, label: int = 1) -> ObjectPrompts:
    return ObjectPrompts(np.array([[x, y]], np.float32), np.array([label], np.int32))


@pytest.fixture(scope="session")
def plate():
    # 300x400 keeps the worms wide enough for per-pixel IoU; 40 frames still hold the
    # crossing of worms 2 and 3 and the start of worm 1's omega turn.
    p = make_plate(n_frames=40, height=300, width=400)
    assert p.touching[:, 1].any() and p.touching[:, 2].any()  # the crossing is in range
    return p


@pytest.fixture(scope="session")
def tracked(plate):
    """Masks (T, K, H, W) and scores (T, K): one click per worm on frame 0, forward."""
    backend = ClassicBackend()
    backend.open(plate.video)
    for obj, (x, y) in plate.head_points(0).items():
        backend.set_prompts(0, obj, click(x, y))
    results = list(backend.propagate(0, len(plate.video) - 1))
    assert [r.frame for r in results] == list(range(len(plate.video)))
    ids = plate.object_ids
    masks = np.stack([np.stack([r.masks[o] for o in ids]) for r in results])
    scores = np.array([[r.scores[o] for o in ids] for r in results])
    return masks, scores


def _iou(masks, labels):
    t, k = masks.shape[:2]
    out = np.zeros((t, k))
    for f in range(t):
        for i in range(k):
            g = labels[f] == i + 1
            m = masks[f, i]
            out[f, i] = (m & g).sum() / max((m | g).sum(), 1)
    return out


def test_implements_protocol():
    assert isinstance(ClassicBackend(), Backend)


def test_iou_apart(plate, tracked):
    iou = _iou(tracked[0], plate.labels)
    apart = ~plate.touching
    assert iou[apart].min() >= 0.90, iou[apart].min()


def test_iou_touching(plate, tracked):
    iou = _iou(tracked[0], plate.labels)
    assert iou[plate.touching].min() >= 0.75, np.round(iou[plate.touching], 2)


def test_identities_kept(plate, tracked):
    masks = tracked[0]
    t, k = masks.shape[:2]
    kept = 0
    for f in range(t):
        for i in range(k):
            ids, counts = np.unique(plate.labels[f][masks[f, i]], return_counts=True)
            kept += bool(len(ids)) and ids[np.argmax(counts)] == i + 1
    assert kept / (t * k) >= 0.98


def test_scores_bounded(plate, tracked):
    scores = tracked[1]
    assert np.all((scores <= 1.0) & ((scores > 0) | np.isneginf(scores)))
    assert np.all(scores[0] == 1.0)  # the prompted frame
    # split frames are flagged as less certain than clean ones
    assert scores[plate.touching].max() < 1.0


def test_reverse_from_last_frame(plate):
    backend = ClassicBackend()
    backend.open(plate.video)
    last = len(plate.video) - 1
    x, y = plate.head_points(last)[4]
    backend.set_prompts(last, 4, click(x, y))
    frames, ious = [], []
    for r in backend.propagate(last, 0, reverse=True):
        frames.append(r.frame)
        g = plate.labels[r.frame] == 4
        ious.append((r.masks[4] & g).sum() / (r.masks[4] | g).sum())
    assert frames == list(range(last, -1, -1))
    assert min(ious) >= 0.9


def test_reanchor_on_later_frame(plate):
    """A prompt on a later frame re-anchors the object there (as with SAM 2)."""
    backend = ClassicBackend()
    backend.open(plate.video)
    backend.set_prompts(0, 1, click(*plate.head_points(0)[4]))
    backend.set_prompts(10, 1, click(*plate.head_points(10)[5]))
    res = {r.frame: r for r in backend.propagate(0, 20)}
    for f, gt in ((5, 4), (15, 5)):
        ids = np.unique(plate.labels[f][res[f].masks[1]])
        assert list(ids[ids > 0]) == [gt]


def test_generator_closable_and_reusable(plate):
    backend = ClassicBackend()
    backend.open(plate.video)
    backend.set_prompts(0, 4, click(*plate.head_points(0)[4]))
    gen = backend.propagate(0, 30)
    assert next(gen).frame == 0 and next(gen).frame == 1
    gen.close()
    again = list(backend.propagate(2, 5))
    assert [r.frame for r in again] == [2, 3, 4, 5]
    assert all(r.masks[4].any() for r in again)


def test_lost_object_is_flagged(plate):
    video = plate.video.copy()
    # worm 4 vanishes from frame 10 on: paint its whole area with the agar level
    ys, xs = np.nonzero((plate.labels == 4).any(axis=0))
    y0, y1, x0, x1 = ys.min() - 4, ys.max() + 5, xs.min() - 4, xs.max() + 5
    assert not np.isin(plate.labels[:, y0:y1, x0:x1], [1, 2, 3, 5]).any()
    video[10:, y0:y1, x0:x1] = np.percentile(video[0, y0:y1, x0:x1], 90)
    backend = ClassicBackend()
    backend.open(video)
    backend.set_prompts(0, 4, click(*plate.head_points(0)[4]))
    res = list(backend.propagate(0, 20))
    assert all(r.masks[4].any() and r.scores[4] > 0 for r in res[:10])
    assert all(not r.masks[4].any() and r.scores[4] == -np.inf for r in res[12:])


def test_bad_prompts(plate):
    backend = ClassicBackend()
    backend.open(plate.video)
    with pytest.raises(BadPromptError, match="empty background"):
        backend.set_prompts(0, 1, click(5.0, 5.0))
    x, y = plate.head_points(0)[4]
    backend.set_prompts(0, 1, click(x, y))
    with pytest.raises(BadPromptError, match="object 1"):
        backend.set_prompts(0, 2, click(x, y))
    with pytest.raises(BadPromptError, match="outside"):
        backend.set_prompts(0, 3, click(-3.0, 10.0))
    with pytest.raises(BadPromptError, match="positive point"):  # nothing to cut from
        backend.set_prompts(0, 3, click(*plate.head_points(0)[5], label=0))


def test_box_negative_and_mask_prompts(plate):
    backend = ClassicBackend()
    backend.open(plate.video)
    h, w = plate.video.shape[1:]
    heads = plate.head_points(0)
    # a box over the whole plate takes every worm; negative points drop all but worm 1
    neg = np.array([heads[i] for i in (2, 3, 4, 5)], np.float32)
    p = ObjectPrompts(neg, np.zeros(4, np.int32), box=(0, 0, w, h))
    r = backend.set_prompts(0, 1, p)
    ids = np.unique(plate.labels[0][r.masks[1]])
    assert list(ids[ids > 0]) == [1]
    # a painted mask is the object's mask on that frame
    painted = plate.labels[0] == 5
    r = backend.set_prompts(0, 2, ObjectPrompts(mask=painted))
    assert np.array_equal(r.masks[2], painted)
    assert r.scores[2] == 1.0


def test_detect(plate):
    backend = ClassicBackend()
    backend.open(plate.video)
    points = backend.detect(0)
    hit = {int(plate.labels[0][round(y), round(x)]) for x, y in points}
    assert hit == {1, 2, 3, 4, 5}  # one point inside each (separate) worm
    assert len(backend.detect(0, max_objects=2)) == 2
    single = detect_worms(plate.video[0])
    assert {int(plate.labels[0][round(y), round(x)]) for x, y in single} == {1, 2, 3, 4, 5}


def test_bright_polarity_auto():
    p = make_plate(n_frames=8, height=300, width=400, n_worms=4, polarity="bright")
    backend = ClassicBackend()
    backend.open(p.video)
    backend.set_prompts(0, 4, click(*p.head_points(0)[4]))
    res = list(backend.propagate(0, 7))
    assert backend.background_model().polarity == "bright"
    for r in res:
        g = p.labels[r.frame] == 4
        assert (r.masks[4] & g).sum() / (r.masks[4] | g).sum() >= 0.85


def _read_tierpsy(path: Path) -> np.ndarray:
    from napari_sam2_worms.video import open_video

    video = open_video(path)
    return np.stack([np.asarray(video[i]) for i in range(video.shape[0])])


def test_tierpsy_single_worm_tracked_from_one_click():
    frames = _read_tierpsy(need_shared("videos", "tierpsy_single_worm.avi"))
    assert len(frames) == 563
    backend = ClassicBackend()
    backend.open(frames)
    points = backend.detect(0, max_objects=1)
    backend.set_prompts(0, 1, click(*points[0]))
    area = np.array([r.masks[1].sum() for r in backend.propagate(0, len(frames) - 1)])
    ok = (area > 0.6 * area[0]) & (area < 1.5 * area[0])
    assert ok.mean() >= 0.99

"""The SAM 2 backend with random weights: semantics only (masks say nothing about quality).

The model runs at image_size=256 (same code path, 16x fewer pixels than 1024) so the
whole module takes a few seconds per test on a CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from napari_sam2_worms.backends.base import (
    Backend,
    BackendError,
    BadPromptError,
    FrameResult,
    ObjectPrompts,
)
from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
from napari_sam2_worms.backends.sam2.frames import IMG_MEAN, IMG_STD, LazySam2Frames

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plate():
    from napari_sam2_worms.synthetic import make_plate

    return make_plate(n_frames=8, height=64, width=80, n_worms=2, seed=1)


@pytest.fixture(scope="module")
def loaded(sam2_random):
    """A backend loaded once through resolve_checkpoint(local random checkpoint)."""
    return sam2_random


@pytest.fixture
def backend(loaded):
    """A fresh backend sharing the loaded model."""
    be = Sam2Backend(device="cpu", predictor=loaded.predictor, read_ahead=0)
    yield be
    be.close()


def click(plate, frame, worm, label=1):
    """A prompt on worm ``worm`` (0-based) at its mid-body on ``frame``."""
    xy = plate.centerlines[frame, worm, 24][None]
    return ObjectPrompts(points=xy.astype(np.float32), labels=np.array([label], np.int32))


class CountingVideo:
    """A lazy (T, H, W) video that makes frames on demand and counts reads."""

    def __init__(self, frames: np.ndarray, n_frames: int) -> None:
        self.frames, self.n = frames, n_frames
        self.reads: list[int] = []

    @property
    def shape(self):
        return (self.n, *self.frames.shape[1:])

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads.append(int(i))
        return self.frames[int(i) % len(self.frames)]


def _check_result(result, frame, ids, shape):
    assert isinstance(result, FrameResult)
    assert result.frame == frame
    assert sorted(result.masks) == sorted(ids)
    for obj in ids:
        m = result.masks[obj]
        assert m.dtype == bool and m.shape == shape
        assert np.isfinite(result.scores[obj])


def test_first_click_reads_one_frame(backend, plate, video_stub):
    video = video_stub(plate.video)
    assert isinstance(backend, Backend)
    backend.open(video)
    assert video.reads == 0  # opening reads nothing
    result = backend.set_prompts(3, 1, click(plate, 3, 0))
    _check_result(result, 3, [1], (64, 80))
    assert video.reads == 1
    backend.set_prompts(3, 1, click(plate, 3, 0))  # same frame again: cached
    assert video.reads == 1


def test_long_video_is_lazy_and_memory_bounded(loaded, plate):
    video = CountingVideo(plate.video, 10_000)
    be = Sam2Backend(device="cpu", predictor=loaded.predictor, memory_frames=2, read_ahead=0)
    be.open(video)
    assert video.reads == []
    be.set_prompts(5000, 1, click(plate, 0, 0))
    assert video.reads == [5000]
    frames = [r.frame for r in be.propagate(5000, 5006)]
    assert frames == list(range(5000, 5007))
    assert video.reads == list(range(5000, 5007))  # each frame read once
    non_cond = be.state["output_dict_per_obj"][0]["non_cond_frame_outputs"]
    assert sorted(non_cond) == [5004, 5005, 5006]  # older ones dropped
    assert sorted(be.state["output_dict_per_obj"][0]["cond_frame_outputs"]) == [5000]
    assert len(be.frames._cache) <= be.image_cache_frames
    be.close()


def test_propagate_forward_and_backward_order(backend, plate):
    backend.open(plate.video)
    backend.set_prompts(3, 1, click(plate, 3, 0))
    backend.set_prompts(3, 2, click(plate, 3, 1))
    forward = list(backend.propagate(3, 6))
    assert [r.frame for r in forward] == [3, 4, 5, 6]
    backward = list(backend.propagate(4, 1, reverse=True))
    assert [r.frame for r in backward] == [4, 3, 2, 1]
    for r in forward + backward:
        _check_result(r, r.frame, [1, 2], (64, 80))
        assert not (r.masks[1] & r.masks[2]).any()  # overlaps resolved pixel-wise
    assert [r.frame for r in backend.propagate(0, 0, reverse=True)] == [0]
    with pytest.raises(ValueError, match="forward"):
        backend.propagate(5, 2)


def test_cancel_mid_propagation_leaves_backend_usable(backend, plate):
    backend.open(plate.video)
    backend.set_prompts(0, 1, click(plate, 0, 0))
    gen = backend.propagate(0, 7)
    assert next(gen).frame == 0
    assert next(gen).frame == 1
    gen.close()
    backend.set_prompts(4, 1, click(plate, 4, 0))  # a correction after the cancel
    assert [r.frame for r in backend.propagate(0, 7)] == list(range(8))


def test_late_object_and_removal(backend, plate):
    backend.open(plate.video)
    backend.set_prompts(0, 1, click(plate, 0, 0))
    assert [sorted(r.masks) for r in backend.propagate(0, 3)] == [[1]] * 4
    late = backend.set_prompts(2, 7, click(plate, 2, 1))  # new object after tracking
    assert 7 in late.masks
    results = list(backend.propagate(0, 4))
    assert [sorted(r.masks) for r in results] == [[1, 7]] * 5
    backend.remove_object(1)
    assert [sorted(r.masks) for r in backend.propagate(2, 3)] == [[7]] * 2


def test_empty_prompts_forget_object_and_reset(backend, plate):
    backend.open(plate.video)
    backend.set_prompts(1, 1, click(plate, 1, 0))
    backend.set_prompts(1, 2, click(plate, 1, 1))
    result = backend.set_prompts(1, 2, ObjectPrompts())  # object 2 has no prompt left
    assert sorted(result.masks) == [1]
    backend.reset()
    with pytest.raises(BadPromptError, match="no prompts"):
        backend.propagate(0, 3)


def test_box_and_mask_prompts(backend, plate):
    backend.open(plate.video)
    r = backend.set_prompts(2, 1, ObjectPrompts(box=(5.0, 5.0, 40.0, 30.0)))
    _check_result(r, 2, [1], (64, 80))
    mask = plate.labels[2] == 2
    r = backend.set_prompts(2, 2, ObjectPrompts(mask=mask))
    _check_result(r, 2, [1, 2], (64, 80))
    assert [r.frame for r in backend.propagate(2, 3)] == [2, 3]


def test_bad_prompts_are_refused(backend, plate):
    backend.open(plate.video)
    with pytest.raises(BadPromptError, match="outside"):
        backend.set_prompts(
            0, 1, ObjectPrompts(points=np.array([[500.0, 5.0]]), labels=np.array([1]))
        )
    with pytest.raises(BadPromptError, match="mask"):
        backend.set_prompts(0, 1, ObjectPrompts(mask=np.ones((3, 3), bool)))


def test_out_of_memory_becomes_backend_error(backend, plate, monkeypatch):
    import torch

    backend.open(plate.video)

    def boom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with monkeypatch.context() as m:
        m.setattr(backend.predictor, "add_new_points_or_box", boom)
        with pytest.raises(BackendError, match="smaller model"):
            backend.set_prompts(0, 1, click(plate, 0, 0))
    assert 1 in backend.set_prompts(0, 1, click(plate, 0, 0)).masks  # still usable


def test_no_jpeg_written(backend, plate, tmp_path, monkeypatch):
    import PIL.Image

    def no_save(*args, **kwargs):
        raise AssertionError("a frame was written as an image file")

    monkeypatch.setattr(PIL.Image.Image, "save", no_save)
    monkeypatch.chdir(tmp_path)
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.rglob("*.jp*g"))
    backend.open(plate.video)
    backend.set_prompts(0, 1, click(plate, 0, 0))
    list(backend.propagate(0, 2))
    assert set(tmp.rglob("*.jp*g")) == before
    assert not list(tmp_path.rglob("*.jp*g"))


def test_with_tracking_session(backend, plate):
    from napari_sam2_worms.engine.session import TrackingSession

    session = TrackingSession(plate.video, backend)
    obj = session.add_object()
    x, y = plate.centerlines[0, 0, 24]
    session.add_point(0, obj, float(x), float(y))
    steps = list(session.propagate("forward", stop=3))
    assert [s.frame for s in steps] == [0, 1, 2, 3]
    assert np.isfinite(session.scores[obj][:4]).all()


def test_lazy_frames_normalise_and_bound_cache():
    video = np.zeros((5, 6, 8), np.uint8)
    video[:, :, :] = np.arange(5, dtype=np.uint8)[:, None, None] * 50
    frames = LazySam2Frames(video, 16, "cpu", cache_frames=2)
    assert len(frames) == 5 and frames.shape == (5, 3, 16, 16)
    t = frames[3]
    assert tuple(t.shape) == (3, 16, 16) and str(t.dtype) == "torch.float32"
    expected = (150 / 255 - np.array(IMG_MEAN)) / np.array(IMG_STD)
    np.testing.assert_allclose(t.mean(dim=(1, 2)).numpy(), expected, rtol=1e-4)
    for i in range(5):
        frames[i]
    assert len(frames._cache) == 2 and frames.decoded == 6  # 3 was evicted, read again
    frames[4]
    assert frames.decoded == 6  # cache hit
    with pytest.raises(IndexError):
        frames[5]


def test_read_ahead_thread_prefetches(plate):
    video = CountingVideo(plate.video, 50)
    frames = LazySam2Frames(video, 32, "cpu", cache_frames=2, read_ahead=3)
    frames[10]
    import time

    deadline = time.monotonic() + 5
    while len(video.reads) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(video.reads) == [10, 11, 12, 13]
    frames[11]
    assert video.reads.count(11) == 1  # served from the read-ahead, not decoded again
    frames.close()


def test_index_image_resolves_overlaps_by_logit_and_cpu_ignores_gpu_options(backend, plate):
    """Results come as one index image (highest logit wins, 0 where no logit > 0);
    compile and CUDA graphs are CUDA-only and leave a CPU model untouched."""
    from napari_sam2_worms.backends.base import LabelMasks
    from napari_sam2_worms.backends.sam2.accel import state_of

    backend.compile, backend.cuda_graphs = True, True
    backend.open(plate.video)
    state = state_of(backend.predictor)
    assert state.compiled is None and state.graphs is None
    assert state.depthwise_convs == state.fused_mask_stages == 0
    seen = {}
    backend.logits_hook = lambda f, ids, lg: seen.__setitem__(
        f, (ids, lg[:, 0].float().numpy().copy())
    )
    for k in range(2):
        backend.set_prompts(0, k + 1, click(plate, 0, k))
    results = list(backend.propagate(0, 4))
    assert [r.frame for r in results] == [0, 1, 2, 3, 4]
    for r in results:
        ids, lg = seen[r.frame]
        assert isinstance(r.masks, LabelMasks) and ids == [1, 2]
        expect = np.where(lg.max(0) > 0, lg.argmax(0) + 1, 0)
        np.testing.assert_array_equal(r.masks.index, expect)
        np.testing.assert_array_equal(r.masks[2], expect == 2)


def test_cpu_yields_each_frame_before_computing_the_next(backend, plate):
    """Look-ahead is for asynchronous GPUs only: on the CPU a cancel after frame t
    costs no extra frame."""
    backend.open(plate.video)
    backend.set_prompts(0, 1, click(plate, 0, 0))
    computed = []
    backend.logits_hook = lambda f, ids, lg: computed.append(f)
    gen = backend.propagate(0, 5)
    assert next(gen).frame == 0 and next(gen).frame == 1
    assert computed == [0, 1]
    gen.close()

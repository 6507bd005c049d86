"""SAM 2's CPU speed-ups (backends/sam2/accel/cpu.py): the same masks, and checks that gate them.

Random weights at a 256 px input, 4 tiny frames: the masks say nothing about quality,
only that a speed-up computes what float32 in sam2's layouts computes.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_sam2_worms.backends.sam2.accel import cpu as sam2_cpu  # noqa: E402


@pytest.fixture(scope="module")
def predictor():
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    torch.manual_seed(0)
    return build_model("sam2.1_hiera_tiny", "cpu", image_size=256)


@pytest.fixture(scope="module")
def plate():
    from napari_sam2_worms.synthetic import make_plate

    return make_plate(n_frames=4, height=120, width=160, n_worms=2, seed=0)


def track(predictor, plate, **speedups) -> dict[int, np.ndarray]:
    """Per-object masks (before overlaps are resolved) of frames 0..3, through the
    backend, two clicks, propagation; the speed-ups as given."""
    from napari_sam2_worms.backends.base import ObjectPrompts
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend

    sam2_cpu.configure_cpu(predictor, **speedups)
    backend = Sam2Backend(predictor=predictor, device="cpu")
    backend.open(plate.video)  # configures again: the choices above stick
    assert predictor._nsw_cpu == speedups
    masks: dict[int, np.ndarray] = {}
    backend.logits_hook = lambda f, ids, lg: masks.__setitem__(f, (lg[:, 0] > 0).numpy())
    for k in range(2):
        xy = plate.centerlines[0, k, 24][None]
        backend.set_prompts(0, k + 1, ObjectPrompts(points=xy, labels=np.array([1])))
    for _ in backend.propagate(0, 3):
        pass
    backend.close()
    return masks


@pytest.fixture(scope="module")
def float32_masks(predictor, plate):
    return track(predictor, plate, bf16=False, channels_last=False)


def ious(a: dict, b: dict) -> list[float]:
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    out = []
    for f in a:
        for x, y in zip(a[f], b[f]):
            union = (x | y).sum()
            out.append(float((x & y).sum() / union) if union else 1.0)
    return out


def test_channels_last_gives_the_same_masks(predictor, plate, float32_masks):
    masks = track(predictor, plate, bf16=False, channels_last=True)
    convs = [
        m for m in predictor.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
    ]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    # same convolutions, another summation order: a pixel or two may flip at most
    assert min(ious(masks, float32_masks)) > 0.999


def test_bf16_gives_the_same_masks_within_tolerance(predictor, plate, float32_masks):
    seen = []
    linear = torch.nn.functional.linear

    def spy(x, w, b=None):
        seen.append((torch.get_autocast_dtype("cpu"), w.dtype))
        assert torch.is_autocast_enabled("cpu")
        return linear(x, w, b)

    torch.nn.functional.linear = spy
    try:
        masks = track(predictor, plate, bf16=True, channels_last=True)
    finally:
        torch.nn.functional.linear = linear
    assert seen and all(d == (torch.bfloat16, torch.bfloat16) for d in seen)
    got = ious(masks, float32_masks)
    # bf16 keeps 8 bits of mantissa (the GPU path runs under bf16 autocast too): the
    # masks' edges move by a pixel here and there (measured: IoU 0.989-0.996)
    assert np.mean(got) > 0.97 and min(got) > 0.95, got


def test_switching_off_restores_float32_weights_and_layouts(predictor):
    lin = predictor.image_encoder.trunk.blocks[0].attn.qkv
    conv = predictor.image_encoder.trunk.patch_embed.proj
    sam2_cpu.configure_cpu(predictor, bf16=False, channels_last=False)
    w32, forward = lin.weight.detach().clone(), conv.forward
    sam2_cpu.configure_cpu(predictor, bf16=True, channels_last=True)
    assert lin.weight.dtype == torch.bfloat16
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert sam2_cpu.set_bf16_weights(predictor, True) == 0  # idempotent
    assert sam2_cpu.set_channels_last(predictor, True) == 0
    sam2_cpu.configure_cpu(predictor, bf16=False, channels_last=False)
    assert lin.weight.dtype == torch.float32 and torch.equal(lin.weight, w32)
    assert conv.weight.is_contiguous() and conv.forward == forward
    assert not hasattr(conv, "_nsw_nchw_forward")


def test_autocast_follows_the_device_and_the_checks(predictor):
    sam2_cpu.configure_cpu(predictor, bf16=True, channels_last=False)
    cpu = sam2_cpu.autocast(predictor, torch.device("cpu"))
    assert isinstance(cpu, torch.autocast) and cpu.fast_dtype == torch.bfloat16
    # MPS runs the device-agnostic path: float32, whatever the CPU checks said
    assert not isinstance(sam2_cpu.autocast(predictor, torch.device("mps")), torch.autocast)
    sam2_cpu.configure_cpu(predictor, bf16=False, channels_last=False)
    assert not isinstance(sam2_cpu.autocast(predictor, torch.device("cpu")), torch.autocast)
    assert predictor._nsw_cpu == {"bf16": False, "channels_last": False}


@pytest.fixture
def fresh_checks(monkeypatch, predictor):
    """No check decided yet in this process, no choice stuck to the predictor."""
    monkeypatch.setattr(sam2_cpu, "_checks", {})
    monkeypatch.delattr(predictor, "_nsw_cpu_wanted", raising=False)
    yield
    sam2_cpu.configure_cpu(predictor, bf16=False, channels_last=False)


def test_a_failing_check_turns_its_speed_up_off_with_a_notice(
    predictor, fresh_checks, monkeypatch, caplog
):
    def broken(*args):
        raise RuntimeError("no oneDNN bf16 kernel in this build")

    monkeypatch.setenv(sam2_cpu.BF16_ENV, "1")
    monkeypatch.setattr(sam2_cpu, "check_bf16", broken)
    monkeypatch.setattr(sam2_cpu, "check_channels_last", lambda m: True)
    with caplog.at_level(logging.WARNING, logger=sam2_cpu.__name__):
        on = sam2_cpu.configure_cpu(predictor)
    assert on == {"bf16": False, "channels_last": True}
    assert "bf16 off (its check failed: no oneDNN bf16 kernel" in caplog.text
    assert predictor.image_encoder.trunk.blocks[0].attn.qkv.weight.dtype == torch.float32
    sam2_cpu.configure_cpu(predictor)  # decided once per process: not checked again
    assert sam2_cpu._checks == {"bf16": False, "channels_last": True}


def test_bf16_only_when_asked_for(predictor, fresh_checks, monkeypatch):
    monkeypatch.setattr(sam2_cpu, "check_bf16", lambda: True)
    monkeypatch.setattr(sam2_cpu, "check_channels_last", lambda m: True)
    monkeypatch.delenv(sam2_cpu.BF16_ENV, raising=False)
    assert sam2_cpu.configure_cpu(predictor) == {"bf16": False, "channels_last": True}
    monkeypatch.setenv(sam2_cpu.BF16_ENV, "0")
    assert sam2_cpu.configure_cpu(predictor) == {"bf16": False, "channels_last": True}
    monkeypatch.setenv(sam2_cpu.BF16_ENV, "1")
    assert sam2_cpu.configure_cpu(predictor) == {"bf16": True, "channels_last": True}
    assert predictor.image_encoder.trunk.blocks[0].attn.qkv.weight.dtype == torch.bfloat16


def test_bf16_check_needs_native_bf16_right_numbers_and_speed(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=sam2_cpu.__name__)
    monkeypatch.setattr(sam2_cpu, "native_bf16", lambda: False)
    assert not sam2_cpu.check_bf16()
    assert "no native bf16" in caplog.text
    monkeypatch.setattr(sam2_cpu, "native_bf16", lambda: True)
    # an emulated bf16 (slower than float32) is kept off
    monkeypatch.setattr(
        sam2_cpu, "_timed", lambda fn, a, w: 2.0 if a.dtype == torch.bfloat16 else 1.0
    )
    assert not sam2_cpu.check_bf16()
    assert "bf16 is not faster here" in caplog.text
    monkeypatch.setattr(
        sam2_cpu, "_timed", lambda fn, a, w: 0.1 if a.dtype == torch.bfloat16 else 1.0
    )
    assert sam2_cpu.check_bf16()
    # wrong numbers (a broken kernel) are refused whatever the speed
    real = torch.nn.functional.linear
    monkeypatch.setattr(
        sam2_cpu.F,
        "linear",
        lambda x, w, b=None: real(x, w, b) * (1.5 if torch.is_autocast_enabled("cpu") else 1),
    )
    assert not sam2_cpu.check_bf16()
    assert "bf16 gave wrong numbers" in caplog.text


def test_channels_last_check_refuses_a_wrong_convolution(predictor, monkeypatch, caplog):
    assert sam2_cpu.check_channels_last(predictor)
    real = sam2_cpu.F.conv2d

    def wrong(x, *args):
        out = real(x, *args)
        return out + 1 if x.is_contiguous(memory_format=torch.channels_last) else out

    monkeypatch.setattr(sam2_cpu.F, "conv2d", wrong)
    with caplog.at_level(logging.WARNING, logger=sam2_cpu.__name__):
        assert not sam2_cpu.check_channels_last(predictor)
    assert "channels-last convolutions differ" in caplog.text


def test_only_the_cpu_gets_the_cpu_speed_ups(monkeypatch):
    from napari_sam2_worms.backends.sam2.checkpoints import build_model
    from napari_sam2_worms.backends.sam2.setup import configure_predictor

    torch.manual_seed(0)
    p = build_model("sam2.1_hiera_tiny", "cpu", image_size=256)
    monkeypatch.setattr(sam2_cpu, "_checks", {"bf16": True, "channels_last": True})
    monkeypatch.setenv(sam2_cpu.BF16_ENV, "1")
    configure_predictor(p, "mps")  # Apple: the device-agnostic path, float32, sam2's layouts
    assert not hasattr(p, "_nsw_cpu")
    assert p.image_encoder.trunk.patch_embed.proj.weight.is_contiguous()
    configure_predictor(p, "cpu")
    assert p._nsw_cpu == {"bf16": True, "channels_last": True}
    assert p.sam_mask_decoder.iou_prediction_head.layers[0].weight.dtype == torch.bfloat16


def test_threads_cut_to_the_usable_cores_unless_the_environment_sets_them(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(sam2_cpu, "usable_threads", lambda: 1)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        assert sam2_cpu.set_threads() == 2  # the user's choice
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert sam2_cpu.set_threads() == 1
        monkeypatch.setattr(sam2_cpu, "usable_threads", lambda: 4)
        assert sam2_cpu.set_threads() == 1  # never more than PyTorch chose
    finally:
        torch.set_num_threads(before)


def test_usable_threads_reads_affinity():
    import os

    assert 1 <= sam2_cpu.usable_threads() <= len(os.sched_getaffinity(0))


def test_hiera_positional_embedding_made_once_with_sam2s_values(monkeypatch):
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    torch.manual_seed(0)
    trunk = build_model("sam2.1_hiera_tiny", "cpu", image_size=256).image_encoder.trunk
    x = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        ref = trunk(x)
        assert sam2_cpu.cache_pos_embed(trunk) and sam2_cpu.cache_pos_embed(trunk)
        calls = []
        interpolate = torch.nn.functional.interpolate
        monkeypatch.setattr(
            torch.nn.functional,
            "interpolate",
            lambda *a, **k: calls.append(1) or interpolate(*a, **k),
        )
        first, second = trunk(x), trunk(x)
    assert len(calls) == 1  # the second image reuses the embedding
    for a, b, c in zip(ref, first, second):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_bf16_runs_sam2s_own_paths_painted_masks_and_backward(predictor, plate):
    """With bf16 weights every entry point of sam2 still runs (under the backend's
    autocast): a painted mask, sam2's per-object propagation, backward, removal."""
    from napari_sam2_worms.backends.base import ObjectPrompts
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend

    sam2_cpu.configure_cpu(predictor, bf16=True, channels_last=True)
    try:
        backend = Sam2Backend(predictor=predictor, device="cpu", batch_objects=False)
        backend.open(plate.video[:3])
        painted = plate.labels[2] == 1
        r = backend.set_prompts(2, 1, ObjectPrompts(mask=painted))
        assert r.masks[1].shape == painted.shape and r.masks[1].any()
        xy = plate.centerlines[2, 1, 24][None]
        backend.set_prompts(2, 2, ObjectPrompts(points=xy, labels=np.array([1])))
        frames = [res.frame for res in backend.propagate(2, 1, reverse=True)]
        assert frames == [2, 1]
        backend.remove_object(2)
        backend.close()
    finally:
        sam2_cpu.configure_cpu(predictor, bf16=False, channels_last=False)

"""SAM 2's CPU speed-ups (backends/sam2/accel/cpu.py): the same masks, and checks that gate them.

Random weights at a 256 px input, 4 tiny frames: the masks say nothing about quality,
only that a speed-up computes what float32 in sam2's layouts computes. Random weights
give small logits (standard deviation ~0.05 here, where a trained model's masks sit
at |logit| ~10), so a pixel flips for a difference real masks would not notice: the
mask tolerances below are loose, the logit ones are relative to the logits' spread.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_sam2_worms.backends.sam2 import accel  # noqa: E402
from napari_sam2_worms.backends.sam2.accel import cpu as sam2_cpu  # noqa: E402
from napari_sam2_worms.backends.sam2.accel import cpu_bf16 as sam2_cpu_bf16  # noqa: E402
from napari_sam2_worms.backends.sam2.accel.state import state_of  # noqa: E402

OFF = dict.fromkeys(sam2_cpu.SPEEDUPS, False)
#: what the checks switch on when they all pass and the environment says nothing
DEFAULT = {**dict.fromkeys(sam2_cpu.SPEEDUPS, True), "bf16": False}


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
    """Per-object logits (before overlaps are resolved) of frames 0..3, through the
    backend, two clicks, propagation; the speed-ups as given (the others off)."""
    from napari_sam2_worms.backends.base import ObjectPrompts
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend

    wanted = {**OFF, **speedups}
    sam2_cpu.configure_cpu(predictor, **wanted)
    backend = Sam2Backend(predictor=predictor, device="cpu")
    backend.open(plate.video)  # configures again: the choices above stick
    assert state_of(predictor).cpu == wanted
    logits: dict[int, np.ndarray] = {}
    backend.logits_hook = lambda f, ids, lg: logits.__setitem__(f, lg[:, 0].float().numpy())
    for k in range(2):
        xy = plate.centerlines[0, k, 24][None]
        backend.set_prompts(0, k + 1, ObjectPrompts(points=xy, labels=np.array([1])))
    for _ in backend.propagate(0, 3):
        pass
    backend.close()
    return logits


@pytest.fixture(scope="module")
def float32_logits(predictor, plate):
    return track(predictor, plate)


def ious(a: dict, b: dict) -> list[float]:
    """Per frame and object: IoU of the masks (logit > 0)."""
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    assert any((b[f] > 0).any() for f in b)  # not all empty
    out = []
    for f in a:
        for x, y in zip(a[f] > 0, b[f] > 0):
            union = (x | y).sum()
            out.append(float((x & y).sum() / union) if union else 1.0)
    return out


def logit_error(a: dict, b: dict) -> tuple[float, float]:
    """(max, mean) absolute logit difference, relative to the float32 logits' spread."""
    diff = np.concatenate([np.abs(a[f] - b[f]).ravel() for f in a])
    spread = np.concatenate([b[f].ravel() for f in b]).std()
    return float(diff.max() / spread), float(diff.mean() / spread)


def test_channels_last_and_fused_layer_norm_give_the_same_masks(
    predictor, plate, float32_logits, monkeypatch
):
    from sam2.modeling.sam2_utils import LayerNorm2d

    calls = []
    sam2_norm = LayerNorm2d.forward
    monkeypatch.setattr(LayerNorm2d, "forward", lambda s, x: calls.append(1) or sam2_norm(s, x))
    logits = track(predictor, plate, channels_last=True, layer_norm=True)
    assert not calls  # every LayerNorm2d ran fused
    convs = [
        m for m in predictor.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
    ]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    # same float32 functions, another summation order: a pixel or two may flip at most
    assert min(ious(logits, float32_logits)) > 0.999
    assert logit_error(logits, float32_logits)[0] < 1e-3


def spy_linears(monkeypatch, predictor) -> dict[str, set]:
    """Record, per top-level module, the (autocast dtype, weight dtype) of its linears."""
    seen: dict[str, set] = {}
    for name in ("image_encoder", "memory_attention", "memory_encoder", "sam_mask_decoder"):
        for lin in getattr(predictor, name).modules():
            if isinstance(lin, torch.nn.Linear):
                forward = lin.forward

                def spy(x, _f=forward, _w=lin.weight, _n=name):
                    on = torch.is_autocast_enabled("cpu")
                    seen.setdefault(_n, set()).add(
                        (on and torch.get_autocast_dtype("cpu"), _w.dtype)
                    )
                    return _f(x)

                monkeypatch.setattr(lin, "forward", spy)
    return seen


def test_bf16_attention_and_encoder_keep_the_masks_and_the_rest_float32(
    predictor, plate, float32_logits, monkeypatch
):
    attention = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional,
        "scaled_dot_product_attention",
        lambda q, k, v, **kw: attention.append((q.dtype, k.dtype, v.dtype)) or sdpa(q, k, v, **kw),
    )
    with monkeypatch.context() as m:
        seen = spy_linears(m, predictor)
        logits = track(predictor, plate, bf16_attention=True, bf16_encoder=True)
    bf = (torch.bfloat16, torch.bfloat16)
    assert seen["image_encoder"] == {bf} and seen["memory_attention"] == {bf}
    # the decoders stay float32, outside any autocast
    assert seen["memory_encoder"] == seen["sam_mask_decoder"] == {(False, torch.float32)}
    assert (torch.bfloat16,) * 3 in attention  # the memory attention attends in bf16
    got = ious(logits, float32_logits)
    # bf16 keeps 8 bits of mantissa; measured here: IoU >= 0.99, logits within 2 % of
    # their spread (at 1024 px, 640x480: IoU >= 0.998 with bf16 attention alone)
    assert np.mean(got) > 0.98 and min(got) > 0.95, got
    worst, mean = logit_error(logits, float32_logits)
    assert worst < 0.2 and mean < 0.02, (worst, mean)


@pytest.mark.parametrize("layer", [0, 3])
def test_bf16_rope_attention_matches_sam2s_with_pointer_tokens(predictor, layer):
    """The memory attention's cross-attention (7 memory frames + 64 object-pointer
    tokens that take no rotary encoding) and self-attention, against sam2's forward."""
    sam2_cpu.configure_cpu(predictor, **OFF)
    mod = predictor.memory_attention.layers[layer]
    g = torch.Generator().manual_seed(layer)
    n = 16 * 16  # 256 px input: 16x16 tokens
    x = torch.randn(2, n, 256, generator=g)
    memory = torch.randn(2, 7 * n + 64, 64, generator=g)
    with torch.inference_mode():
        for attn, args, kw in (
            (mod.cross_attn_image, (x, memory, memory), {"num_k_exclude_rope": 64}),
            (mod.self_attn, (x, x, x), {}),
        ):
            ref = attn(*args, **kw)
            out = sam2_cpu_bf16._rope_attention(attn, attn.forward, *args, **kw)
            assert out.dtype == torch.float32
            # bf16 rounding: 0.0015 measured; without the pointer tokens 0.029, without
            # the rotary encoding 0.12
            assert float((out - ref).norm() / ref.norm()) < 5e-3


def test_bf16_attention_alone_is_closer_than_everything_in_bf16(predictor, plate, float32_logits):
    attention = track(predictor, plate, bf16_attention=True)
    everything = track(predictor, plate, bf16=True)
    assert logit_error(attention, float32_logits)[1] < logit_error(everything, float32_logits)[1]
    assert min(ious(attention, float32_logits)) > 0.97


def test_bf16_everywhere_runs_every_linear_in_bf16(predictor, plate, float32_logits, monkeypatch):
    seen = spy_linears(monkeypatch, predictor)
    logits = track(predictor, plate, bf16=True, channels_last=True)
    assert set(seen) == {"image_encoder", "memory_attention", "memory_encoder", "sam_mask_decoder"}
    assert all(v == {(torch.bfloat16, torch.bfloat16)} for v in seen.values()), seen
    got = ious(logits, float32_logits)
    assert np.mean(got) > 0.97 and min(got) > 0.9, got


def test_restore_cpu_gives_back_sam2s_model(plate):
    """Every CPU speed-up on, then restore_cpu: forwards, weights, layouts and the
    positional-embedding method are sam2's again (values equal to the originals)."""
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    torch.manual_seed(0)
    p = build_model("sam2.1_hiera_tiny", "cpu", image_size=256)
    before = {n: t.detach().clone() for n, t in p.state_dict().items()}
    dicts = {n: set(vars(m)) for n, m in p.named_modules()}
    on = sam2_cpu.configure_cpu(p, **dict.fromkeys(sam2_cpu.SPEEDUPS, True))
    assert on == dict.fromkeys(sam2_cpu.SPEEDUPS, True)
    assert p.image_encoder.trunk.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert "_get_pos_embed" in vars(p.image_encoder.trunk)
    sam2_cpu.configure_cpu(p, bf16=False)  # partial bf16: the decoder's linears float32
    assert p.sam_mask_decoder.iou_prediction_head.layers[0].weight.dtype == torch.float32
    assert p.memory_attention.layers[0].linear1.weight.dtype == torch.bfloat16
    sam2_cpu.restore_cpu(p)
    assert state_of(p).cpu is None and state_of(p).cpu_wanted == {}
    # left: the CPU path's float32 memory cast (bf16 attention put it beneath itself),
    # logged in the AccelState for accel.uninstall, which removes the state too
    assert state_of(p).patches.describe() == ["MemoryAttention.forward"]
    accel.uninstall(p)
    assert {n: set(vars(m)) for n, m in p.named_modules()} == dicts
    after = p.state_dict()
    for n, t in before.items():
        assert (
            after[n].dtype == t.dtype and after[n].is_contiguous() and torch.equal(after[n], t)
        ), n


def test_bf16_attention_off_again_keeps_the_float32_memory_cast(plate):
    """bf16 attention chosen before the backend installs its speed-ups, then off: the
    float32 memory cast of the CPU path stays under it and survives (sam2 stores the
    memory in bf16, which a float32 memory attention cannot read)."""
    from napari_sam2_worms.backends.base import ObjectPrompts
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    torch.manual_seed(0)
    p = build_model("sam2.1_hiera_tiny", "cpu", image_size=256)
    sam2_cpu.configure_cpu(p, **{**OFF, "bf16_attention": True})
    backend = Sam2Backend(predictor=p, device="cpu")
    backend.open(plate.video[:2])
    sam2_cpu.configure_cpu(p, bf16_attention=False)
    assert state_of(p).fp32_memory and "forward" in vars(p.memory_attention)
    xy = plate.centerlines[0, 0, 24][None]
    backend.set_prompts(0, 1, ObjectPrompts(points=xy, labels=np.array([1])))
    assert [r.frame for r in backend.propagate(0, 1)][-1] == 1
    backend.close()


def test_switching_a_speed_up_off_restores_float32_weights_and_layouts(predictor):
    lin = predictor.image_encoder.trunk.blocks[0].attn.qkv
    conv = predictor.image_encoder.trunk.patch_embed.proj
    sam2_cpu.configure_cpu(predictor, **OFF)
    w32 = lin.weight.detach().clone()
    sam2_cpu.configure_cpu(predictor, bf16=True, channels_last=True)
    assert lin.weight.dtype == torch.bfloat16
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert sam2_cpu.set_bf16_weights(predictor, True) == 0  # idempotent
    assert sam2_cpu.set_channels_last(predictor, True) == 0
    sam2_cpu.configure_cpu(predictor, bf16=False, channels_last=False)
    assert lin.weight.dtype == torch.float32 and torch.equal(lin.weight, w32)
    assert conv.weight.is_contiguous() and "forward" not in vars(conv)


def test_autocast_follows_the_device_and_the_checks(predictor):
    sam2_cpu.configure_cpu(predictor, **{**OFF, "bf16": True})
    cpu = sam2_cpu.autocast(predictor, torch.device("cpu"))
    assert isinstance(cpu, torch.autocast) and cpu.fast_dtype == torch.bfloat16
    # MPS runs the device-agnostic path: float32, whatever the CPU checks said
    assert not isinstance(sam2_cpu.autocast(predictor, torch.device("mps")), torch.autocast)
    # partial bf16 enters its own autocast: none around the whole model
    sam2_cpu.configure_cpu(predictor, **{**OFF, "bf16_attention": True, "bf16_encoder": True})
    assert not isinstance(sam2_cpu.autocast(predictor, torch.device("cpu")), torch.autocast)
    sam2_cpu.configure_cpu(predictor, **OFF)
    assert state_of(predictor).cpu == OFF


def test_unknown_speed_up_is_refused(predictor):
    with pytest.raises(TypeError, match=r"unknown CPU speed-up.*bf8"):
        sam2_cpu.configure_cpu(predictor, bf8=True)


@pytest.fixture
def fresh_checks(monkeypatch, predictor):
    """No check decided yet in this process, no choice stuck to the predictor."""
    monkeypatch.setattr(sam2_cpu, "_checks", {})
    state_of(predictor).cpu_wanted = {}
    yield
    sam2_cpu.configure_cpu(predictor, **OFF)


def all_checks_pass(monkeypatch) -> None:
    monkeypatch.setattr(sam2_cpu, "check_bf16", lambda: True)
    monkeypatch.setattr(sam2_cpu, "check_bf16_attention", lambda: True)
    monkeypatch.setattr(sam2_cpu, "check_channels_last", lambda m: True)
    monkeypatch.setattr(sam2_cpu, "check_layer_norm", lambda: True)


def test_a_failing_check_turns_its_speed_up_off_with_a_notice(
    predictor, fresh_checks, monkeypatch, caplog
):
    def broken(*args):
        raise RuntimeError("no oneDNN bf16 kernel in this build")

    all_checks_pass(monkeypatch)
    monkeypatch.delenv(sam2_cpu.BF16_ENV, raising=False)
    monkeypatch.setattr(sam2_cpu, "check_bf16_attention", broken)
    with caplog.at_level(logging.WARNING, logger=sam2_cpu.__name__):
        on = sam2_cpu.configure_cpu(predictor)
    assert on == {**DEFAULT, "bf16_attention": False}
    assert "bf16_attention off (its check failed: no oneDNN bf16 kernel" in caplog.text
    assert predictor.memory_attention.layers[0].linear1.weight.dtype == torch.float32
    assert "forward" not in vars(predictor.memory_attention.layers[0].self_attn)
    monkeypatch.setattr(sam2_cpu, "check_bf16_attention", lambda: True)
    sam2_cpu.configure_cpu(predictor)  # decided once per process: not checked again
    assert sam2_cpu._checks["bf16_attention"] is False


def test_the_environment_chooses_float32_partial_or_whole_bf16(
    predictor, fresh_checks, monkeypatch
):
    all_checks_pass(monkeypatch)
    monkeypatch.delenv(sam2_cpu.BF16_ENV, raising=False)  # default: bf16 where it keeps masks
    assert sam2_cpu.configure_cpu(predictor) == DEFAULT
    monkeypatch.setenv(sam2_cpu.BF16_ENV, "0")  # float32 throughout
    off16 = {**DEFAULT, "bf16_attention": False, "bf16_encoder": False}
    assert sam2_cpu.configure_cpu(predictor) == off16
    assert predictor.image_encoder.trunk.blocks[0].attn.qkv.weight.dtype == torch.float32
    monkeypatch.setenv(sam2_cpu.BF16_ENV, "1")  # the whole model, the decoders too
    assert sam2_cpu.configure_cpu(predictor) == {**DEFAULT, "bf16": True}
    assert predictor.sam_mask_decoder.iou_prediction_head.layers[0].weight.dtype == torch.bfloat16


def test_bf16_checks_need_native_bf16_right_numbers_and_speed(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=sam2_cpu_bf16.__name__)
    for check in (sam2_cpu_bf16.check_bf16, sam2_cpu_bf16.check_bf16_attention):
        monkeypatch.setattr(sam2_cpu_bf16, "native_bf16", lambda: False)
        assert not check()
        assert "no native bf16" in caplog.text
        monkeypatch.setattr(sam2_cpu_bf16, "native_bf16", lambda: True)
        # an emulated bf16 (slower than float32) is kept off
        monkeypatch.setattr(
            sam2_cpu_bf16, "_timed", lambda fn, a, *r: 2.0 if a.dtype == torch.bfloat16 else 1.0
        )
        assert not check()
        assert "is not faster here" in caplog.text
        monkeypatch.setattr(
            sam2_cpu_bf16, "_timed", lambda fn, a, *r: 0.1 if a.dtype == torch.bfloat16 else 1.0
        )
        assert check()
    # wrong numbers (a broken kernel) are refused whatever the speed
    real_linear, real_sdpa = sam2_cpu_bf16.F.linear, sam2_cpu_bf16.F.scaled_dot_product_attention
    monkeypatch.setattr(
        sam2_cpu_bf16.F,
        "linear",
        lambda x, w, b=None: (
            real_linear(x, w, b) * (1.5 if torch.is_autocast_enabled("cpu") else 1)
        ),
    )
    monkeypatch.setattr(
        sam2_cpu_bf16.F,
        "scaled_dot_product_attention",
        lambda q, k, v: real_sdpa(q, k, v) * (1.5 if q.dtype == torch.bfloat16 else 1),
    )
    assert not sam2_cpu_bf16.check_bf16()
    assert "bf16 matrix products gave wrong numbers" in caplog.text
    assert not sam2_cpu_bf16.check_bf16_attention()
    assert "bf16 attention gave wrong numbers" in caplog.text


def test_channels_last_and_layer_norm_checks_refuse_wrong_kernels(predictor, monkeypatch, caplog):
    assert sam2_cpu.check_channels_last(predictor) and sam2_cpu.check_layer_norm()
    real_conv, real_norm = sam2_cpu.F.conv2d, sam2_cpu.F.layer_norm

    def wrong(x, *args):
        out = real_conv(x, *args)
        return out + 1 if x.is_contiguous(memory_format=torch.channels_last) else out

    monkeypatch.setattr(sam2_cpu.F, "conv2d", wrong)
    monkeypatch.setattr(sam2_cpu.F, "layer_norm", lambda x, *a: real_norm(x, *a) * 1.01)
    with caplog.at_level(logging.WARNING, logger=sam2_cpu.__name__):
        assert not sam2_cpu.check_channels_last(predictor)
        assert not sam2_cpu.check_layer_norm()
    assert "channels-last convolutions differ" in caplog.text
    assert "the fused layer norm differs" in caplog.text


def test_only_the_cpu_gets_the_cpu_speed_ups(monkeypatch):
    from napari_sam2_worms.backends.sam2.checkpoints import build_model
    from napari_sam2_worms.backends.sam2.setup import configure_predictor

    torch.manual_seed(0)
    p = build_model("sam2.1_hiera_tiny", "cpu", image_size=256)
    monkeypatch.setattr(sam2_cpu, "_checks", dict.fromkeys(sam2_cpu.SPEEDUPS, True))
    monkeypatch.delenv(sam2_cpu.BF16_ENV, raising=False)
    configure_predictor(p, "mps")  # Apple: the device-agnostic path, float32, sam2's layouts
    assert state_of(p).cpu is None
    assert p.image_encoder.trunk.patch_embed.proj.weight.is_contiguous()
    assert "forward" not in vars(p.image_encoder)
    assert p.memory_attention.layers[0].linear1.weight.dtype == torch.float32
    configure_predictor(p, "cpu")
    assert state_of(p).cpu == DEFAULT
    assert p.memory_attention.layers[0].linear1.weight.dtype == torch.bfloat16
    assert p.sam_mask_decoder.iou_prediction_head.layers[0].weight.dtype == torch.float32


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
    assert sam2_cpu.uncache_pos_embed(trunk) and "_get_pos_embed" not in vars(trunk)


def test_bf16_runs_sam2s_own_paths_painted_masks_and_backward(predictor, plate):
    """With bf16 weights every entry point of sam2 still runs (under the backend's
    autocast): a painted mask, sam2's per-object propagation, backward, removal; the
    same with the partial bf16 (attention and encoder)."""
    from napari_sam2_worms.backends.base import ObjectPrompts
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend

    for speedups in (
        {"bf16": True, "channels_last": True},
        {"bf16_attention": True, "bf16_encoder": True, "layer_norm": True},
    ):
        sam2_cpu.configure_cpu(predictor, **{**OFF, **speedups})
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
            sam2_cpu.configure_cpu(predictor, **OFF)

"""Batched propagation (all objects in one forward) gives the per-object masks.

Random weights at image_size=256 on the CPU: the masks mean nothing, but both modes
run the same network on the same memory, so they must agree.
"""

from __future__ import annotations

import numpy as np
import pytest

from fixtures.masks import iou
from napari_sam2_worms.backends.base import ObjectPrompts
from napari_sam2_worms.backends.sam2.adapter import Sam2Backend

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plate():
    from napari_sam2_worms.synthetic import make_plate

    return make_plate(n_frames=6, height=64, width=80, n_worms=3, seed=3)


@pytest.fixture(scope="module")
def predictor(sam2_random):
    """The shared random-weight predictor in float32 for this module.

    Batched and per-object tracking must give the same masks; under the CPU's bf16
    speed-ups (on by default) the rounding differs between a batch of 3 and a batch of
    1, so batching is compared in float32 here (the bf16 speed-ups are compared with
    float32 in test_sam2_cpu_speedups.py).
    """
    from napari_sam2_worms.backends.sam2.accel.cpu import configure_cpu
    from napari_sam2_worms.backends.sam2.accel.state import require_state

    p = sam2_random.predictor
    state = require_state(p)
    before = dict(state.cpu_wanted)
    on = configure_cpu(p, bf16_attention=False, bf16_encoder=False, bf16=False)
    assert not (on["bf16_attention"] or on["bf16_encoder"] or on["bf16"])
    yield p
    state.cpu_wanted = before
    configure_cpu(p)


def click(plate, frame, worm):
    xy = plate.centerlines[frame, worm, 24][None].astype(np.float32)
    h, w = plate.video.shape[1:3]
    xy = np.clip(xy, 0, [w - 1, h - 1]).astype(np.float32)
    return ObjectPrompts(points=xy, labels=np.array([1], np.int32))


def track(predictor, plate, batch: bool, calls, monkeypatch=None) -> list:
    """Run ``calls`` ((kind, args) steps) and return every propagated FrameResult
    (and the number of stored outputs, and of ``track_step`` calls while propagating)."""
    be = Sam2Backend(device="cpu", predictor=predictor, batch_objects=batch)
    be.open(plate.video)
    steps = []
    if monkeypatch is not None:
        inner = type(predictor).track_step

        def counting(self, *a, **k):
            steps.append(k["current_vision_feats"][-1].shape[1])  # batch size
            return inner(self, *a, **k)

        monkeypatch.setattr(type(predictor), "track_step", counting)
    results = []
    for kind, args in calls:
        if kind == "click":
            frame, obj, worm = args
            n = len(steps)
            be.set_prompts(frame, obj, click(plate, frame, worm))
            del steps[n:]  # only count propagation steps
        else:
            steps.append("prop")
            results += list(be.propagate(*args))
    stored = be.stored_frames()
    be.close()
    if monkeypatch is not None:
        monkeypatch.undo()
    return results, stored, steps


def compare(a, b) -> list[float]:
    assert [r.frame for r in a] == [r.frame for r in b]
    ious = []
    assert any(m.any() for r in b for m in r.masks.values())  # not all empty
    for ra, rb in zip(a, b):
        assert sorted(ra.masks) == sorted(rb.masks)
        for o in ra.masks:
            ious.append(iou(ra.masks[o], rb.masks[o]))
            assert abs(ra.scores[o] - rb.scores[o]) < 1e-2 * max(1.0, abs(rb.scores[o]))
    return ious


def test_batched_matches_per_object(predictor, plate, monkeypatch):
    calls = [("click", (0, k + 1, k)) for k in range(3)] + [("prop", (0, 3))]
    batched, n_b, steps_b = track(predictor, plate, True, calls, monkeypatch)
    single, n_s, steps_s = track(predictor, plate, False, calls, monkeypatch)
    # frames 1..3: one forward for 3 objects vs. three forwards of one
    assert steps_b == ["prop", 3, 3, 3] and steps_s == ["prop"] + [1] * 9
    ious = compare(batched, single)
    assert len(ious) == 4 * 3
    print(f"mean IoU {np.mean(ious):.5f}")
    assert min(ious) >= 0.99, f"mean IoU {np.mean(ious):.4f}, min {min(ious):.4f}"
    assert n_b == n_s  # same per-object outputs stored


def test_batched_late_object_correction_and_reverse(predictor, plate, monkeypatch):
    """Objects with different memories (added late, corrected) are grouped correctly."""
    calls = [
        ("click", (0, 1, 0)),
        ("click", (0, 2, 1)),
        ("prop", (0, 2)),
        ("click", (2, 3, 2)),  # a late object: its memory differs from the others'
        ("prop", (2, 4)),
        ("click", (4, 1, 0)),  # a correction of object 1 on a tracked frame
        ("prop", (4, 2, True)),  # each object has its own memory now
    ]
    batched, _, steps = track(predictor, plate, True, calls, monkeypatch)
    # frames 2-4: objects 1+2 in one forward, object 3 alone (its memory differs)
    assert steps == ["prop", 2, 2, "prop", 2, 2, 1, 2, 1, "prop"] + [1] * 7
    single, _, _ = track(predictor, plate, False, calls)
    ious = compare(batched, single)
    assert len(ious) == 2 * 3 + 3 * 3 + 3 * 3
    print(f"mean IoU {np.mean(ious):.5f}")
    assert min(ious) >= 0.99, f"mean IoU {np.mean(ious):.4f}, min {min(ious):.4f}"


def test_memory_assembly_matches_sam2_and_builds_positions_once(predictor, plate, monkeypatch):
    """Our memory bank assembly gives sam2's conditioned features on every tracked
    frame (3 objects batched, re-propagated, then backward); its positional part is broadcast over
    the objects (stride 0) and computed once per memory layout: the second pass over
    the same frames computes none."""
    import torch

    from napari_sam2_worms.backends.sam2.accel import memory, state_of

    be = Sam2Backend(device="cpu", predictor=predictor, batch_objects=True)
    be.open(plate.video)
    installed = state_of(predictor).fast_memory
    assert installed is not None
    fast = predictor._prepare_memory_conditioned_features
    compared, strides, built, ours = [], [], [], [False]

    def both(**kwargs):
        ours[0] = True
        out = fast(**kwargs)
        ours[0] = False
        if not kwargs["is_init_cond_frame"]:
            ref = installed.sam2_prepare(**kwargs)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
            compared.append((kwargs["frame_idx"], kwargs["track_in_reverse"]))
        return out

    attention = predictor.memory_attention.forward

    def recording(*args, **kwargs):
        pos, mem = kwargs["memory_pos"], kwargs["memory"]
        if ours[0] and pos.shape[1] > 1 and mem.shape[0] > 1:
            strides.append(pos.stride(1))
        return attention(*args, **kwargs)

    positions = memory._positions
    monkeypatch.setattr(predictor, "_prepare_memory_conditioned_features", both)
    monkeypatch.setattr(predictor.memory_attention, "forward", recording)
    monkeypatch.setattr(memory, "_positions", lambda *a: built.append(1) or positions(*a))
    try:
        for k in range(3):
            be.set_prompts(0, k + 1, click(plate, 0, k))
        list(be.propagate(0, 3))
        first = len(built)
        list(be.propagate(0, 3))
        second = len(built)
        list(be.propagate(3, 0, True))  # backward: sam2's reverse memory and pointers
    finally:
        be.close()
    forward = [c for c in compared if not c[1]]
    assert sorted({t for t, _ in forward}) == [1, 2, 3] and len(forward) == 6
    assert {t for t, rev in compared if rev} == {1, 2, 3}
    assert strides and set(strides) == {0}  # one object's positions, broadcast
    assert first == 3 and second == first  # 3 layouts; the second pass reuses them


def test_memory_assembly_leaves_no_reference_cycle():
    """Installed on a predictor, the assembly does not keep it alive: dropping the last
    reference frees it at once (weights and graph pools with it), no collector needed."""
    import gc
    import weakref

    import torch
    from sam2.modeling.sam2_base import SAM2Base

    from napari_sam2_worms.backends.sam2.accel.memory import install_fast_memory_assembly

    predictor = SAM2Base.__new__(SAM2Base)
    torch.nn.Module.__init__(predictor)
    assert install_fast_memory_assembly(predictor)
    assert install_fast_memory_assembly(predictor)  # idempotent
    gone = weakref.ref(predictor)
    gc.disable()
    try:
        del predictor
        assert gone() is None
    finally:
        gc.enable()

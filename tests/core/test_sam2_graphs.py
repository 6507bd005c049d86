"""CUDA-graph wrapper logic that does not need a GPU (replay itself: tests/gpu)."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")

from napari_sam2_worms.backends.sam2.accel import graphs  # noqa: E402
from napari_sam2_worms.backends.sam2.accel.graphs import GraphedForward, capturing  # noqa: E402


def test_cpu_calls_run_eagerly_and_never_capture():
    calls = []

    def fn(x, scale=1.0, extra=None):
        calls.append(1)
        return {"y": [x * scale]}

    g = GraphedForward(fn, "toy", pool=None, min_repeats=1)
    x = torch.ones(3)
    with capturing():
        for _ in range(3):
            out = g(x, scale=2.0)
    assert len(calls) == 3 and not g.graphs and g.replays == 0
    assert torch.equal(out["y"][0], torch.full((3,), 2.0))


def test_signature_keys():
    key = GraphedForward._key
    assert key([torch.ones(2)]) is None  # CPU tensor: eager
    assert key([1, "a", None]) is None  # no tensor: eager
    with torch.device("meta"):
        meta = torch.ones(2)
    assert key([meta]) is None  # not CUDA


def test_capturing_is_per_thread_and_restored():
    assert not getattr(graphs._state, "allowed", False)
    seen = []
    with capturing():
        assert graphs._state.allowed
        t = threading.Thread(target=lambda: seen.append(getattr(graphs._state, "allowed", False)))
        t.start()
        t.join()
    assert seen == [False]
    assert not graphs._state.allowed


def test_broadcast_inputs_are_collapsed_for_the_static_buffers():
    """A graph's static input for an expanded tensor holds one copy and is expanded
    again, so the forward sees the same (stride 0) layout as in eager mode."""
    from napari_sam2_worms.backends.sam2.accel.graphs import _collapse

    one = torch.arange(12.0).reshape(4, 1, 3)
    x = one.expand(4, 5, 3)
    base = _collapse(x)
    assert base.shape == (4, 1, 3)
    static = base.clone().expand(x.shape)
    assert static.stride()[1] == 0 and torch.equal(static, x)
    dense = torch.randn(2, 3)
    assert _collapse(dense) is dense  # nothing broadcast: the tensor itself
    single = torch.randn(1, 3).expand(1, 3)  # size-1 dims are not broadcast dims
    assert _collapse(single).shape == (1, 3)

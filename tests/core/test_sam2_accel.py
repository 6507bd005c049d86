"""The speed-up layer (backends/sam2/accel): one install, one uninstall, one state object."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_sam2_worms.backends.base import BackendError  # noqa: E402
from napari_sam2_worms.backends.sam2 import accel  # noqa: E402
from napari_sam2_worms.backends.sam2.accel import (  # noqa: E402
    AccelOptions,
    AccelOptionsError,
    AccelState,
    state_of,
)

#: a module's own entries that hold its parameters, buffers and children (compared apart)
_CONTAINERS = ("_parameters", "_buffers", "_modules")


def _tensor(t, storage: bool):
    if t is None:
        return None
    # the storage itself, or (where a speed-up may copy it back) its exact values
    where = t.data_ptr() if storage else float(t.detach().double().sum())
    return (id(t), where, t.dtype, t.stride(), t.requires_grad)


def snapshot(predictor, storage: bool = True) -> dict:
    """Everything install may change: every module's class and own attributes (by
    identity), and every parameter's and buffer's storage (or values) and layout."""
    out = {}
    for name, m in predictor.named_modules():
        own = {k: id(v) for k, v in vars(m).items() if k not in _CONTAINERS}
        params = {k: _tensor(v, storage) for k, v in m._parameters.items()}
        buffers = {k: _tensor(v, storage) for k, v in m._buffers.items()}
        out[name] = (type(m), own, params, buffers, list(m._modules))
    return out


@pytest.fixture
def fresh_predictor():
    """A random-weight SAM 2.1 tiny at 256 px that nothing else touches."""
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    torch.manual_seed(0)
    return build_model("sam2.1_hiera_tiny", "cpu", image_size=256)


@pytest.mark.parametrize("cpu", [False, True])
def test_install_then_uninstall_restores_the_predictor_exactly(fresh_predictor, cpu):
    """Every speed-up that can go on a CPU model (the CUDA-only ones put on by hand:
    compilation is lazy, the convolution changes run anywhere; with and without the
    CPU speed-ups) and then uninstall: the same class, the same attributes, the same
    weights in the same layout (the CPU speed-ups put back copies of the convolution
    weights: the same values, another storage)."""
    from sam2.sam2_video_predictor import SAM2VideoPredictor, SAM2VideoPredictorVOS

    from napari_sam2_worms.backends.sam2.accel.compile import compile_predictor
    from napari_sam2_worms.backends.sam2.accel.convs import channels_last_depthwise

    p = fresh_predictor
    conv = p.memory_encoder.fuser.layers[0].dwconv
    before = snapshot(p, storage=not cpu)
    state = accel.install(p, AccelOptions("cpu", fast_attention=True, cpu=cpu))
    assert state_of(p) is state
    assert (state.cpu is not None) == cpu
    assert state.prompt_cache is not None and state.fast_memory is not None
    assert state.fast_attention is not None and state.fp32_memory
    if not cpu:  # the CUDA path's own (never together with the CPU speed-ups)
        assert channels_last_depthwise(p.memory_encoder, state.patches) == 2
        compile_predictor(p, "default", state)
        assert type(p) is SAM2VideoPredictorVOS and state.compiled == "default"
        assert "forward" in vars(conv)  # the channels-last forward
    n = len(state.patches)
    assert accel.install(p, state.options) is state and len(state.patches) == n  # idempotent
    assert snapshot(p, storage=not cpu) != before

    assert accel.uninstall(p) is state
    assert type(p) is SAM2VideoPredictor and state_of(p) is None
    after = snapshot(p, storage=not cpu)
    assert after.keys() == before.keys()
    for name in before:
        assert after[name] == before[name], name or "the predictor"
    assert "forward" not in vars(conv)
    assert accel.uninstall(p) is None  # nothing left to undo


def test_uninstalled_predictor_computes_as_before(fresh_predictor):
    """After uninstall the memory attention is sam2's own forward again: the same
    output, bit for bit, as before install."""
    p = fresh_predictor
    g = torch.Generator().manual_seed(0)
    side = p.sam_image_embedding_size
    curr = torch.randn(side * side, 2, 256, generator=g)
    pos = torch.randn(side * side, 2, 256, generator=g)
    mem = torch.randn(2 * side * side + 4, 2, 64, generator=g)
    mpos = torch.randn(2 * side * side + 4, 2, 64, generator=g)
    with torch.inference_mode():
        want = p.memory_attention(curr, mem, pos, mpos, 4)
        accel.install(p, AccelOptions("cpu", fast_attention=True, cpu=False))
        fast = p.memory_attention(curr, mem, pos, mpos, 4)
        accel.uninstall(p)
        again = p.memory_attention(curr, mem, pos, mpos, 4)
    assert torch.allclose(fast, want, atol=1e-4 * float(want.abs().max()))
    assert torch.equal(again, want)


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_compile_with_cuda_graphs_of_its_own_and_ours_is_refused(mode):
    with pytest.raises(AccelOptionsError, match="records CUDA graphs of its own") as info:
        AccelOptions.for_backend("cuda", compile=mode, cuda_graphs=True)
    msg = str(info.value)
    assert "cuda_graphs=False" in msg and "\n" not in msg
    assert isinstance(info.value, BackendError)  # shown as a one-line message to users
    # the way out the message names works
    assert AccelOptions.for_backend("cuda", compile=mode, cuda_graphs=False).compile == mode
    assert AccelOptions.for_backend("cuda", compile=True).compile == "default"


def test_the_backend_refuses_the_combination_when_made():
    """Before any model is loaded or video opened."""
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend

    with pytest.raises(AccelOptionsError, match="reduce-overhead"):
        Sam2Backend(device="cpu", compile="reduce-overhead")
    with pytest.raises(AccelOptionsError, match="compile mode must be one of"):
        Sam2Backend(device="cpu", compile="fastest")
    Sam2Backend(device="cpu", compile="reduce-overhead", cuda_graphs=False)


def test_graphs_are_not_added_to_a_model_compiled_with_its_own(fresh_predictor):
    """A predictor shared by two backends: compiled with graphs of its own first, then
    asked for ours: the state's rule leaves them off (no CUDA needed to decide)."""
    from napari_sam2_worms.backends.sam2.accel.compile import compile_predictor
    from napari_sam2_worms.backends.sam2.accel.graphs import graph_predictor, graphed_forwards

    p = fresh_predictor
    state = accel.install(p, AccelOptions("cpu", cuda_graphs=False, cpu=False))
    compile_predictor(p, "reduce-overhead", state)
    assert state.refuse_graphs() is not None
    assert graph_predictor(p, state=state) == [] and state.graphs == []
    assert graphed_forwards(p) == []
    accel.uninstall(p)
    # the other way round: graphs first (even none), then no compilation
    graphed = AccelState(AccelOptions("cuda"), graphs=[])
    assert "already replays CUDA graphs" in (graphed.refuse_compile("default") or "")
    assert AccelState(AccelOptions("cuda")).refuse_compile("default") is None

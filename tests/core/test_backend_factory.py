"""The one backend factory: the auto / no-checkpoint rule, options reaching the backend."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from napari_sam2_worms.backends.base import BackendError
from napari_sam2_worms.backends.factory import (
    CLASSIC_HINT,
    BackendSpec,
    build_backend,
    resolve_spec,
    sam2_available,
)
from napari_sam2_worms.backends.sam2.checkpoints import DEFAULT_MODEL, CheckpointError


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A checkpoint cache with nothing in it (and no download allowed by the tests)."""
    monkeypatch.setenv("NAPARI_SAM2_WORMS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def checkpoint_file(tmp_path):
    """A file where a checkpoint is expected (the factory does not load it)."""
    path = tmp_path / "weights.pt"
    path.write_bytes(b"not loaded by the factory")
    return path


def test_importing_the_factory_imports_neither_torch_nor_sam2():
    code = (
        "import sys, napari_sam2_worms.backends.factory as f; "
        "print(sorted(m for m in ('torch', 'sam2') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_unknown_backend_name_is_refused_with_the_choices():
    with pytest.raises(
        ValueError, match="unknown backend 'sam3'; choose one of auto, sam2, classic"
    ):
        BackendSpec(name="sam3")  # type: ignore[arg-type]


def test_classic_gets_its_options():
    backend = build_backend(BackendSpec(name="classic", options={"min_area": 33}))
    assert backend.name == "classic"
    assert backend.min_area == 33


def test_sam2_without_checkpoint_says_what_to_do(empty_cache):
    with pytest.raises(CheckpointError) as info:
        build_backend(BackendSpec(name="sam2", download=False))
    message = str(info.value)
    assert message.endswith(CLASSIC_HINT)
    assert f"{DEFAULT_MODEL}.pt is not in the cache" in message
    # the original error, without the command-line hint, is kept as the cause
    assert isinstance(info.value.__cause__, CheckpointError)
    assert CLASSIC_HINT not in str(info.value.__cause__)


def test_auto_without_checkpoint_falls_back_to_classic_once(empty_cache, caplog):
    with caplog.at_level(logging.WARNING, logger="napari_sam2_worms.backends.factory"):
        backend = build_backend(BackendSpec(name="auto", download=False))
    assert backend.name == "classic"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"no SAM 2 checkpoint available ({DEFAULT_MODEL}.pt is not")
    assert "napari-sam2-worms download, or --checkpoint PATH" in warnings[0]


def test_resolve_spec_decides_auto_without_building(empty_cache, checkpoint_file):
    spec, reason = resolve_spec(BackendSpec(name="auto", download=False, compile=True))
    assert spec.name == "classic" and spec.compile is True  # the rest of the spec is kept
    assert reason is not None and reason.startswith(f"{DEFAULT_MODEL}.pt is not in the cache")
    spec, reason = resolve_spec(BackendSpec(name="auto", checkpoint=str(checkpoint_file)))
    assert (spec.name, spec.checkpoint, reason) == ("sam2", str(checkpoint_file), None)
    missing = str(checkpoint_file.with_name("gone.pt"))
    with pytest.raises(CheckpointError, match=r"gone\.pt does not exist"):
        resolve_spec(BackendSpec(name="sam2", checkpoint=missing))


def test_sam2_options_reach_the_backend(checkpoint_file):
    spec = BackendSpec(
        name="sam2",
        checkpoint=str(checkpoint_file),
        device="cpu",
        input_size=512,
        compile=True,
        cuda_graphs=False,
        fast_attention=False,
        options={"image_cache_frames": 7},
    )
    backend = build_backend(spec)  # lazy: the model loads at open()
    try:
        assert backend.name == "sam2"
        got = (backend.image_size, backend.compile, backend.cuda_graphs, backend.fast_attention)
        assert got == (512, True, False, False)
        assert backend.image_cache_frames == 7
        assert str(backend.checkpoint) == str(checkpoint_file)
        assert backend.download is False  # the factory resolved the checkpoint already
        # options win over the fields (the widget's tests shrink the input this way)
        small = build_backend(
            BackendSpec(
                name="sam2",
                checkpoint=str(checkpoint_file),
                device="cpu",
                options={"image_size": 256},
            )
        )
        assert small.image_size == 256
    finally:
        backend.close()


def test_auto_falls_back_when_the_device_is_missing(checkpoint_file, caplog):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA (asks for a CUDA device that is missing)")
    with pytest.raises(BackendError, match="no CUDA GPU is available"):
        build_backend(BackendSpec(name="sam2", checkpoint=str(checkpoint_file), device="cuda"))
    with caplog.at_level(logging.WARNING, logger="napari_sam2_worms.backends.factory"):
        backend = build_backend(
            BackendSpec(name="auto", checkpoint=str(checkpoint_file), device="cuda")
        )
    assert backend.name == "classic"
    assert "CUDA was requested but no CUDA GPU is available" in caplog.text


def test_sam2_available(empty_cache, checkpoint_file):
    assert not sam2_available()
    assert sam2_available(checkpoint=str(checkpoint_file))
    empty_cache.mkdir()
    (empty_cache / f"{DEFAULT_MODEL}.pt").write_bytes(b"cached")
    assert sam2_available()


def test_batch_follows_the_same_rule(empty_cache, tmp_path, capsys):
    """The batch decides once, before any worker: sam2 fails with the hint, auto says classic."""
    pytest.importorskip(
        "distributed", reason="the batch extra (dask[distributed]) is not installed"
    )
    import tifffile

    from napari_sam2_worms.batch.runner import BatchOptions, _resolve_backend
    from napari_sam2_worms.cli import main

    video = tmp_path / "p.tif"
    tifffile.imwrite(video, np.zeros((2, 16, 16), np.uint8))
    out = tmp_path / "out"
    args = ["batch", str(video), "--out", str(out), "--no-download", "--init", "detect"]
    assert main([*args, "--backend", "sam2"]) == 2
    err = capsys.readouterr().err
    assert f"{DEFAULT_MODEL}.pt is not in the cache" in err and "--backend classic" in err
    assert not out.exists() or not any(out.iterdir())  # nothing started
    said: list[str] = []
    options = _resolve_backend(BatchOptions(backend="auto", download=False), said.append)
    assert options.backend == "classic"
    assert len(said) == 1
    assert said[0].startswith(f"no SAM 2 checkpoint available ({DEFAULT_MODEL}.pt is not in")
    assert said[0].endswith("); using the classic backend for every video")


def test_make_backend_kept_for_scripts(empty_cache):
    """engine.pipeline.make_backend, the earlier script API, goes through the factory."""
    from napari_sam2_worms.engine.pipeline import make_backend

    assert make_backend("classic", min_area=33).min_area == 33
    assert make_backend("auto", download=False).name == "classic"
    with pytest.raises(CheckpointError):
        make_backend("sam2", download=False)

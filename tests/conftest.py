"""Shared fixtures: the synthetic plate, paths to the real data in ../shared/data.

The real recordings live beside the clone, in ``../shared/data`` (a fresh clone has
none). Tests that need them ask for :func:`shared_data` (or call :func:`need_shared`);
where the data is absent they skip with the reason, unless the environment variable
``NAPARI_SAM2_WORMS_REQUIRE_DATA=1`` is set (``.ci/run`` sets it), which turns the
absence into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _autosave_in_tmp(tmp_path_factory, monkeypatch):
    """Autosaves of tests go to a temporary folder, never the user's cache."""
    monkeypatch.setenv(
        "NAPARI_SAM2_WORMS_AUTOSAVE", str(tmp_path_factory.getbasetemp() / "autosave")
    )


REQUIRE_DATA_ENV = "NAPARI_SAM2_WORMS_REQUIRE_DATA"


def need_shared(*parts: str) -> Path:
    """The path ``../shared/data/<parts>``; skip (or fail, in CI) where it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        msg = f"the shared test data is missing: {path} (see README, 'Tests')"
        if os.environ.get(REQUIRE_DATA_ENV) == "1":
            pytest.fail(msg + f"; {REQUIRE_DATA_ENV}=1 makes this a failure")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real recordings, ``../shared/data`` (skips where it is absent)."""
    return need_shared()


@pytest.fixture(scope="session")
def small_plate():
    """A small synthetic plate: 3 worms, 12 frames, 120x160 (fast)."""
    from napari_sam2_worms.synthetic import make_plate

    return make_plate(n_frames=12, height=120, width=160, n_worms=3, seed=1)


@pytest.fixture(scope="session")
def sam2_random(tmp_path_factory):
    """SAM 2 tiny with random weights, built from sam2's own config, saved as a checkpoint
    and loaded once through the real local-file path (resolve_checkpoint) at
    image_size=256. Masks from it say nothing about quality: tests assert semantics only."""
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
    from napari_sam2_worms.backends.sam2.checkpoints import resolve_checkpoint
    from napari_sam2_worms.testing.random_sam2 import make_random_checkpoint

    folder = tmp_path_factory.getbasetemp() / "sam2_random"
    ckpt = make_random_checkpoint(folder / "sam2.1_hiera_tiny.pt", reuse=True)
    path = resolve_checkpoint("sam2.1_hiera_tiny", ckpt.path, download=False)
    backend = Sam2Backend(checkpoint=path, device="cpu", image_size=256)
    backend.load()
    return backend


class ArrayVideoStub:
    """Minimal lazy-video stand-in over an array (counts frame reads)."""

    def __init__(self, array: np.ndarray, fps: float = 15.0) -> None:
        self.array = array
        self.fps = fps
        self.reads = 0

    @property
    def shape(self):
        return self.array.shape

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def ndim(self):
        return self.array.ndim

    def __len__(self):
        return len(self.array)

    def __getitem__(self, key):
        self.reads += 1
        return self.array[key]


@pytest.fixture
def video_stub():
    return ArrayVideoStub

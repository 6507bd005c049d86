"""SAM 2's input-size setting: validation, what ``auto`` picks, the model built at it."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from napari_sam2_worms.backends.sam2.input_size import (
    INPUT_SIZES,
    check_input_size,
    resolve_input_size,
)


@pytest.mark.parametrize(
    "shape, size",
    [
        ((10, 480, 640), 768),  # a 640x480 video: 768 covers its 640 px
        ((10, 384, 384, 3), 512),
        ((10, 512, 300), 512),  # exactly 512 fits
        ((10, 1024, 1280), 1024),  # larger than every size: the model's own
        ((100, 96, 128), 512),
        ((600, 800), 1024),  # a frame's (H, W): 800 needs 1024
    ],
)
def test_auto_on_cpu_fits_the_video(shape, size):
    assert resolve_input_size("auto", "cpu", shape) == size
    assert resolve_input_size("auto", "mps", shape) == size


def test_auto_on_gpu_is_the_trained_size():
    assert resolve_input_size("auto", "cuda", (10, 96, 128)) == 1024
    assert resolve_input_size("auto", "cpu", None) == 1024  # unknown video: 1024


def test_explicit_sizes_are_kept_and_notice_only_for_auto(caplog):
    with caplog.at_level(logging.WARNING):
        for size in INPUT_SIZES:
            assert resolve_input_size(size, "cpu", (5, 96, 128)) == size
            assert resolve_input_size(str(size), "cuda", None) == size
        assert resolve_input_size(None, "cpu", (5, 96, 128)) is None
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING):
        resolve_input_size("auto", "cpu", (5, 480, 640))
    assert "768" in caplog.text and "trained at 1024" in caplog.text


@pytest.mark.parametrize("bad", ["big", 0, -512, 500, "512.5", 1024.5, "1e3"])
def test_bad_sizes_are_refused_with_the_choices(bad):
    with pytest.raises(ValueError, match="auto or one of 1024, 768, 512"):
        check_input_size(bad)


def test_backend_builds_the_model_at_the_auto_size(tmp_path):
    """A small video on the CPU gets a 512-px model; one built before the video was known
    (1024) is rebuilt for it; a size given explicitly is what the model gets."""
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
    from napari_sam2_worms.testing.random_sam2 import make_random_checkpoint

    ckpt = make_random_checkpoint(tmp_path / "sam2.1_hiera_tiny.pt").path
    video = np.zeros((2, 96, 128), np.uint8)

    backend = Sam2Backend(checkpoint=ckpt, device="cpu", download=False, image_size="auto")
    backend.open(video)
    assert backend.predictor.image_size == 512
    assert backend.frames.image_size == 512

    early = Sam2Backend(checkpoint=ckpt, device="cpu", download=False, image_size="auto")
    early.load()  # no video yet: auto means 1024
    assert early.predictor.image_size == 1024
    early.open(video)
    assert early.predictor.image_size == 512

    fixed = Sam2Backend(checkpoint=ckpt, device="cpu", download=False, image_size=256)
    fixed.open(video)
    assert fixed.predictor.image_size == 256
    handed = Sam2Backend(predictor=fixed.predictor, device="cpu", image_size="auto")
    handed.open(video)  # a predictor handed in is never rebuilt
    assert handed.predictor is fixed.predictor


def test_track_command_takes_the_input_size():
    from napari_sam2_worms.cli import build_parser

    parser = build_parser()
    track = ["track", "v.mp4", "--prompts", "p.json", "--out", "r"]
    assert parser.parse_args(track).input_size == "auto"
    assert parser.parse_args([*track, "--input-size", "512"]).input_size == 512
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([*track, "--input-size", "500"])
    assert exc.value.code == 2


def test_saved_session_records_the_input_size(tmp_path, sam2_random, small_plate):
    """session.json says which model and input size made the masks (provenance)."""
    import json

    from napari_sam2_worms.engine.session import TrackingSession
    from napari_sam2_worms.engine.session_io import save_session

    session = TrackingSession(small_plate.video[:2], sam2_random)
    session.add_object()
    save_session(session, tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "session.json").read_text())
    assert doc["backend"] == {"name": "sam2", "model": "sam2.1_hiera_tiny", "input_size": 256}

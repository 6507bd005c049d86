"""The sam2 names we rely on (backends/sam2/compat.py): all there, missing ones named."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from napari_sam2_worms.backends.base import BackendError
from napari_sam2_worms.backends.sam2 import compat
from napari_sam2_worms.backends.sam2.checkpoints import load_predictor
from napari_sam2_worms.backends.sam2.compat import (
    INFERENCE_STATE_KEYS,
    TESTED_VERSIONS,
    Sam2CompatError,
    check_sam2_compat,
    incompatibilities,
)

REPO = Path(__file__).resolve().parents[2]
SAM2_PACKAGE = REPO / "src/napari_sam2_worms/backends/sam2"
COMPAT = SAM2_PACKAGE / "compat.py"


def test_the_installed_sam2_is_a_tested_one_with_every_name(sam2_random):
    """A failure here means: the environment's sam2 is new; test it, then list it."""
    assert compat.installed_version() in TESTED_VERSIONS
    assert incompatibilities(sam2_random.predictor) == []
    assert check_sam2_compat(sam2_random.predictor) in TESTED_VERSIONS


def test_loading_a_checkpoint_names_a_missing_private_method(sam2_random, monkeypatch):
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    monkeypatch.delattr(SAM2VideoPredictor, "_get_orig_video_res_output")
    with pytest.raises(Sam2CompatError) as info:
        load_predictor("sam2.1_hiera_tiny", sam2_random.checkpoint, "cpu", image_size=256)
    msg = str(info.value)
    assert isinstance(info.value, BackendError)  # shown as a one-line message to users
    assert "\n" not in msg
    assert "SAM2VideoPredictor._get_orig_video_res_output (missing)" in msg
    assert "1.1.0" in msg and compat.TESTED_COMMIT in msg
    assert msg.count("(missing)") == 1  # nothing else is blamed


def test_changed_signatures_are_named(monkeypatch):
    from sam2.modeling.memory_attention import MemoryAttention
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    # a method we replace with a drop-in: its parameters must be exactly sam2's
    monkeypatch.setattr(MemoryAttention, "forward", lambda self, curr, memory, curr_pos=None: 0)
    # a method we call with keywords: the ones we pass must exist
    monkeypatch.setattr(
        SAM2VideoPredictor,
        "clear_all_prompts_in_frame",
        lambda self, inference_state, frame_idx, obj_id: None,
    )
    problems = incompatibilities()
    assert any(p.startswith("MemoryAttention.forward (parameters") for p in problems), problems
    assert "SAM2VideoPredictor.clear_all_prompts_in_frame (no parameter need_output)" in problems
    assert len(problems) == 2, problems
    with pytest.raises(Sam2CompatError, match="clear_all_prompts_in_frame"):
        check_sam2_compat()


def test_a_missing_model_attribute_is_named(sam2_random, monkeypatch):
    p = sam2_random.predictor
    monkeypatch.delattr(p.memory_attention, "pos_enc_at_input")
    monkeypatch.delattr(p, "num_maskmem")
    problems = incompatibilities(p)
    assert sorted(problems) == [
        "predictor.memory_attention.pos_enc_at_input (missing)",
        "predictor.num_maskmem (missing)",
    ]
    assert incompatibilities() == []  # without the model only classes are checked


def _init_state_of_another_sam2(self, video_path, offload_state_to_cpu=False):
    inference_state = {}
    inference_state["images"] = video_path
    inference_state["num_frames"] = 1
    inference_state["tracking_has_started"] = False
    return inference_state


def test_a_changed_inference_state_is_named(monkeypatch):
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    monkeypatch.setattr(SAM2VideoPredictor, "init_state", _init_state_of_another_sam2)
    problems = incompatibilities()
    assert "inference_state keys ['tracking_has_started'] (new)" in problems
    missing = [p for p in problems if p.startswith("inference_state keys") and "missing" in p]
    assert len(missing) == 1 and "'frames_tracked_per_obj'" in missing[0]


def test_a_changed_normalisation_is_named(monkeypatch):
    from sam2.utils import misc

    real = misc.load_video_frames

    def load_video_frames(video_path, image_size, offload, img_mean=(0.5, 0.5, 0.5), img_std=1):
        return real(video_path, image_size, offload)

    monkeypatch.setattr(misc, "load_video_frames", load_video_frames)
    assert sorted(incompatibilities()) == [
        "load_video_frames(img_mean=(0.5, 0.5, 0.5)) (changed; we use (0.485, 0.456, 0.406))",
        "load_video_frames(img_std=1) (changed; we use (0.229, 0.224, 0.225))",
    ]


def test_the_backend_builds_sam2s_inference_state_keys(sam2_random):
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend

    backend = Sam2Backend(device="cpu", predictor=sam2_random.predictor, image_size=256)
    backend.open(np.zeros((2, 32, 48), np.uint8))
    assert sorted(backend.state) == sorted(INFERENCE_STATE_KEYS)


def test_another_version_with_every_name_warns_once_and_works(monkeypatch, caplog):
    monkeypatch.setattr(compat, "installed_version", lambda: "1.1.7")
    monkeypatch.setattr(compat, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        assert check_sam2_compat() == "1.1.7"
        assert check_sam2_compat() == "1.1.7"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "sam2 1.1.7 is installed" in warnings[0] and "1.1.0" in warnings[0]


# -- every private sam2 name our code reaches is listed --------------------------------
_DEFINED = re.compile(
    r"^\s*(?:def|class)\s+(_[a-z]\w*)|self\.(_[a-z]\w*)\s*[:=]|^(_[a-z]\w*)\s*[:=]", re.M
)
_REACHED = re.compile(r"\.(_[a-z]\w*)\b|[\"'](_[a-z]\w*)[\"']")


def _names(pattern: re.Pattern, files) -> set[str]:
    found: set[str] = set()
    for f in files:
        for groups in pattern.findall(f.read_text(encoding="utf-8", errors="replace")):
            found.update(g for g in groups if g)
    return found


def _our_files() -> list[Path]:
    skip = {COMPAT, REPO / "tests/core/test_sam2_compat.py"}  # the list itself and this test
    files = [p for d in ("src", "tests", "benchmarks") for p in (REPO / d).rglob("*.py")]
    return [p for p in files if p not in skip]


def test_every_private_sam2_name_our_code_uses_is_listed():
    import sam2

    sam2_private = _names(_DEFINED, Path(sam2.__file__).parent.rglob("*.py"))
    assert "_run_single_frame_inference" in sam2_private  # the scan reads sam2
    files = _our_files()
    reached = {n for n in _names(_REACHED, files) if not n.startswith("_nsw_")}
    ours = _names(_DEFINED, files)
    listed = {e.name for e in (*compat.CLASSES, *compat.METHODS)}
    listed |= {n for names in compat.ATTRIBUTES.values() for n in names}
    unlisted = (reached & sam2_private) - ours - listed
    assert not unlisted, f"list these sam2 names in backends/sam2/compat.py: {sorted(unlisted)}"
    stale = {n for n in listed if n.startswith("_")} - reached
    assert not stale, f"compat.py lists private names no code uses: {sorted(stale)}"


_ON_PREDICTOR = re.compile(
    r"\b(?:predictor|p|self)\.([a-z]\w*)\b|getattr\((?:predictor|p), \"([a-z]\w*)\""
)
#: reached as ``self.x`` on our own objects, or torch's ``Module.training``
_NOT_SAM2 = {"device", "training"}


def test_every_predictor_attribute_our_sam2_code_reads_is_listed(sam2_random):
    import torch

    files = [f for f in SAM2_PACKAGE.rglob("*.py") if f != COMPAT]
    assert len(files) > 10  # the scan reads the package
    reached = _names(_ON_PREDICTOR, files)
    assert {"num_maskmem", "sam_image_embedding_size"} <= reached  # the scan sees both forms
    predictor = sam2_random.predictor
    module = set(dir(torch.nn.Module))
    sam2s = {n for n in reached if hasattr(predictor, n) and n not in module} - _NOT_SAM2
    listed = set(compat.ATTRIBUTES[""]) | {e.name for e in compat.METHODS}
    assert not sam2s - listed, f"list these in compat.ATTRIBUTES: {sorted(sam2s - listed)}"

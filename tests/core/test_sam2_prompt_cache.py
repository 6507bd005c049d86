"""The prompt encoder's constant answers are cached: same outputs, computed once."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def predictor():
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    torch.manual_seed(0)
    p = build_model("sam2.1_hiera_tiny", "cpu", image_size=256)
    p.requires_grad_(False)
    return p


def heads_inputs(p, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    s = p.sam_image_embedding_size
    feats = torch.randn(batch, p.sam_prompt_embed_dim, s, s, generator=g)
    high = [
        torch.randn(batch, 32, 4 * s, 4 * s, generator=g),
        torch.randn(batch, 64, 2 * s, 2 * s, generator=g),
    ]
    return feats, high


def run_heads(p, feats, high, point_inputs=None):
    with torch.inference_mode():
        return p._forward_sam_heads(
            backbone_features=feats,
            point_inputs=point_inputs,
            mask_inputs=None,
            high_res_features=high,
            multimask_output=True,
        )


def test_cached_prompts_give_sam2s_outputs(predictor, monkeypatch):
    from napari_sam2_worms.backends.sam2.accel import state_of
    from napari_sam2_worms.backends.sam2.accel.prompt_cache import cache_empty_prompts

    p = predictor
    inputs = [heads_inputs(p, b, seed) for b, seed in ((2, 0), (2, 1), (3, 2))]
    before = [run_heads(p, *x) for x in inputs]
    points = {
        "point_coords": torch.tensor([[[100.0, 60.0]], [[30.0, 200.0]]]),
        "point_labels": torch.ones(2, 1, dtype=torch.int32),
    }
    clicked_before = run_heads(p, *inputs[0], point_inputs=points)

    cache_empty_prompts(p)
    cache_empty_prompts(p)  # idempotent
    calls = []
    encode = p.sam_prompt_encoder._embed_points
    monkeypatch.setattr(
        p.sam_prompt_encoder, "_embed_points", lambda *a, **k: calls.append(1) or encode(*a, **k)
    )
    after = [run_heads(p, *x) for x in inputs]
    for a, b in zip(before, after):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    # computed once per number of objects (2, then 3), not once per frame
    assert len(calls) == 2
    cache = state_of(p).prompt_cache
    assert set(k[1] for k in cache if k[0] == "empty") == {2, 3}
    # a frame with clicks is never answered from the cache
    clicked = run_heads(p, *inputs[0], point_inputs=points)
    assert len(calls) == 3
    for x, y in zip(clicked_before, clicked):
        assert torch.equal(x, y)
    assert not torch.equal(clicked[0], after[0][0])


def test_backend_installs_the_cache(sam2_random):
    from napari_sam2_worms.backends.sam2.accel import state_of
    from napari_sam2_worms.backends.sam2.adapter import Sam2Backend
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    p = build_model("sam2.1_hiera_tiny", "cpu", image_size=256)
    be = Sam2Backend(device="cpu", predictor=p)
    be.open(np.zeros((2, 32, 32), np.uint8))
    assert state_of(p).prompt_cache is not None
    be.close()

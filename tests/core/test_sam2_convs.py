"""Depthwise convolutions in channels-last layout: the same results."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")


def test_memory_encoder_same_output_in_channels_last():
    from napari_sam2_worms.backends.sam2.accel.convs import channels_last_depthwise
    from napari_sam2_worms.backends.sam2.checkpoints import build_model

    torch.manual_seed(0)
    p = build_model("sam2.1_hiera_tiny", "cpu", image_size=256)
    p.requires_grad_(False)
    me = p.memory_encoder
    feats = torch.randn(2, 256, 16, 16)
    masks = torch.randn(2, 1, 256, 256)
    with torch.inference_mode():
        before = me(feats, masks, skip_mask_sigmoid=True)
        assert channels_last_depthwise(me) == 2  # the fuser's two 7x7 depthwise convs
        assert channels_last_depthwise(me) == 0  # idempotent
        after = me(feats, masks, skip_mask_sigmoid=True)
    torch.testing.assert_close(after["vision_features"], before["vision_features"])
    for a, b in zip(after["vision_pos_enc"], before["vision_pos_enc"]):
        torch.testing.assert_close(a, b)
    conv = me.fuser.layers[0].dwconv
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)

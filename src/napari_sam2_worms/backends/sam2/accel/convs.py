"""Depthwise convolutions of SAM 2 in channels-last layout (CUDA).

The memory encoder's fuser runs two 7x7 depthwise convolutions on every object's
(256, 64, 64) features each frame. cuDNN's kernel for them in the default (NCHW) layout
is slow; given channels-last input it picks another one, 3x faster (H200, bf16: 10
objects 0.39 -> 0.12 ms, 50 objects 1.89 -> 0.58 ms per convolution). The next layers
(layer norm over channels, then a permute to channels-last for the pointwise linears)
accept either layout. Same convolution, another summation order. Only imported with
torch.
"""

from __future__ import annotations

import logging
import types
from typing import Any, TypeGuard

import torch
import torch.nn.functional as F

from .patches import Patches

log = logging.getLogger(__name__)


def _is_depthwise(conv: torch.nn.Module) -> TypeGuard[torch.nn.Conv2d]:
    return (
        isinstance(conv, torch.nn.Conv2d)
        and conv.groups > 1
        and conv.groups == conv.in_channels == conv.out_channels
        and conv.kernel_size != (1, 1)
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
    )


def _forward(self: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous(memory_format=torch.channels_last)
    return F.conv2d(
        x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
    )


def is_channels_last_depthwise(conv: torch.nn.Module) -> bool:
    """Whether :func:`channels_last_depthwise` gave ``conv`` its forward."""
    forward = conv.__dict__.get("forward")
    return isinstance(forward, types.MethodType) and forward.__func__ is _forward


def channels_last_depthwise(module: torch.nn.Module, patches: Patches | None = None) -> int:
    """Run every depthwise ``Conv2d`` under ``module`` in channels-last layout.

    Idempotent. Install before compiling or capturing graphs.

    Parameters
    ----------
    module : a sam2 module (the memory encoder).
    patches : where the changes are logged (the predictor's ``AccelState.patches``);
        None: not undoable.

    Returns
    -------
    int
        How many convolutions changed.
    """
    patches = Patches() if patches is None else patches
    n = 0
    for conv in module.modules():
        if not _is_depthwise(conv) or is_channels_last_depthwise(conv):
            continue
        with torch.no_grad():
            data = conv.weight.data.contiguous(memory_format=torch.channels_last)
            patches.set_data(conv.weight, data, "depthwise conv weight")
        patches.set(conv, "forward", types.MethodType(_forward, conv))
        n += 1
    if n:
        log.info("%d depthwise convolutions in channels-last layout", n)
    return n


def _is_mask_stage(conv: Any, norm: Any, act: Any) -> bool:
    """Tell a (3x3 stride-2 convolution, LayerNorm2d, exact GELU) stage with few channels."""
    from sam2.modeling.sam2_utils import LayerNorm2d

    return (
        isinstance(conv, torch.nn.Conv2d)
        and conv.kernel_size == (3, 3)
        and conv.stride == (2, 2)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.bias is not None
        and conv.padding_mode == "zeros"
        and conv.out_channels in (1, 2, 4, 8, 16)
        and type(norm) is LayerNorm2d
        and type(act) is torch.nn.GELU
        and act.approximate == "none"
    )


def _bf16_autocast() -> bool:
    return torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.bfloat16


def _is_fused(md: Any) -> bool:
    """Whether :func:`fused_mask_stages` gave the mask downsampler ``md`` its forward."""
    return getattr(md.__dict__.get("forward"), "__qualname__", "") == _FUSED_QUALNAME


def fused_mask_stages(memory_encoder: torch.nn.Module, patches: Patches | None = None) -> int:
    """Run the leading few-channel stages of sam2's mask downsampler as one Triton kernel each.

    :func:`.triton_kernels.mask_stage` on CUDA under bf16 autocast, else sam2's modules.
    Idempotent. Install before compiling or capturing graphs. At 10 objects on an H100
    the first two stages (1 -> 4 channels at 1024x1024, 4 -> 16 at 512x512) cost cuDNN
    0.12 and 0.55 ms in any layout, at 50 objects 0.62 and 2.7 ms, for a few GFLOP.

    Parameters
    ----------
    memory_encoder : sam2's memory encoder.
    patches : where the change is logged (the predictor's ``AccelState.patches``);
        None: not undoable.

    Returns
    -------
    int
        The number of fused stages (0 when already fused or not applicable).
    """
    patches = Patches() if patches is None else patches
    md = getattr(memory_encoder, "mask_downsampler", None)
    encoder = getattr(md, "encoder", None)
    if md is None or not isinstance(encoder, torch.nn.Sequential) or _is_fused(md):
        return 0
    layers = list(encoder)
    n = 0
    while 3 * n + 2 < len(layers) and _is_mask_stage(*layers[3 * n : 3 * n + 3]):
        n += 1
    if n == 0:
        return 0
    try:
        from .triton_kernels import mask_stage, usable
    except Exception as exc:  # no triton in this torch build
        log.info("mask downsampler keeps cuDNN: %s", exc)
        return 0
    # the GPU must suit the kernel (Ampere or newer); a CPU model keeps sam2's path at
    # call time anyway (the fused stages run only on CUDA tensors)
    device = next(memory_encoder.parameters()).device
    if device.type == "cuda" and not usable(device):
        return 0
    stages = [layers[3 * k : 3 * k + 2] for k in range(n)]
    rest = layers[3 * n :]
    sam2_forward = md.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not (x.is_cuda and _bf16_autocast()):
            return sam2_forward(x)
        for conv, norm in stages:
            x = mask_stage(x, conv.weight, conv.bias, norm.weight, norm.bias, norm.eps)
        for layer in rest:
            x = layer(x)
        return x

    patches.set(md, "forward", forward)
    log.info("mask downsampler: %d stages fused", n)
    return n


_FUSED_QUALNAME = "fused_mask_stages.<locals>.forward"

"""Zero-channel widening of the MobileNet stem for runtimes that compute in channel blocks.

ONNX Runtime's CPU convolutions keep activations in blocks of 8 (AVX2) or 16 (AVX-512) channels.
The MobileNetV1-0.25 stem makes 8 channels: on a 16-channel machine its depthwise conv's output is
converted back to plain layout and the next 1×1 conv falls back to slower code. Giving the first
conv and the depthwise conv zero extra channels (zero weights, zero bias) and the 1×1 conv zero
weights for them keeps every output the same and the whole stem in the blocked layout.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from featherface.models.fused import PointwiseConv, copy_pre_hooks

ZERO_AT_ZERO = (nn.ReLU, nn.LeakyReLU, nn.Identity)


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
                return
    raise ValueError("module to replace is not part of the model")


def _widened_conv(conv: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    """``conv`` with zero input / output channels appended (depthwise stays depthwise)."""
    depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
    wide = nn.Conv2d(
        in_channels,
        out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        groups=out_channels if depthwise else conv.groups,
        bias=conv.bias is not None,
    ).to(conv.weight)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[: conv.out_channels, : conv.weight.shape[1]] = conv.weight
        if conv.bias is not None:
            wide.bias.zero_()
            wide.bias[: conv.out_channels] = conv.bias
    return copy_pre_hooks(conv, wide)


def _widened_pointwise(conv: PointwiseConv | nn.Conv2d, in_channels: int) -> PointwiseConv | nn.Conv2d:
    """A 1×1 conv reading ``in_channels`` inputs, zero weights for the appended ones."""
    if isinstance(conv, nn.Conv2d):
        return _widened_conv(conv, in_channels, conv.out_channels)
    weight = conv.weight.new_zeros(conv.weight.shape[0], in_channels)
    weight[:, : conv.weight.shape[1]] = conv.weight.detach()
    return copy_pre_hooks(conv, PointwiseConv(weight, conv.bias))


@torch.no_grad()
def widen_stem(model: nn.Module, multiple: int) -> nn.Module:
    """Pad a fused FeatherFace model's stem (first conv → depthwise conv → 1×1 conv) with zero
    channels up to a multiple of ``multiple``, in place; returns ``model``.

    Exact: the extra channels are 0 after every activation the stem uses (ReLU / LeakyReLU of
    0), and the 1×1 conv gives them zero weights. A stem already a multiple is left alone.

    Raises:
        ValueError: ``multiple`` is not positive, the model is not fused (batch norms would
            need widening too) or its stem does not have the MobileNetV1 layout.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be a positive channel count, got {multiple}")
    if not getattr(model, "fused", False):
        raise ValueError("widen_stem rewrites a fused model: call model.fuse() first")
    layers = list(model.body.stage1[0]) + list(model.body.stage1[1])
    convs = [layer for layer in layers if isinstance(layer, nn.Conv2d | PointwiseConv)]
    others = [layer for layer in layers if not isinstance(layer, nn.Conv2d | PointwiseConv)]
    if len(convs) != 3 or not all(isinstance(layer, ZERO_AT_ZERO) for layer in others):
        raise ValueError(f"expected a fused MobileNetV1 stem (conv, depthwise conv, 1×1 conv), got {layers}")
    first, depthwise, pointwise = convs
    channels = first.out_channels
    if not isinstance(first, nn.Conv2d) or not (
        isinstance(depthwise, nn.Conv2d)
        and depthwise.groups == depthwise.in_channels == depthwise.out_channels == channels
    ):
        raise ValueError(
            f"expected a conv then a {channels}-channel depthwise conv, got {first}, {depthwise}"
        )
    wide = math.ceil(channels / multiple) * multiple
    if wide == channels:
        return model
    _replace(model, first, _widened_conv(first, first.in_channels, wide))
    _replace(model, depthwise, _widened_conv(depthwise, wide, wide))
    _replace(model, pointwise, _widened_pointwise(pointwise, wide))
    return model

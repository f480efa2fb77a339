"""MobileNetV1-0.25 body shared by every FeatherFace model."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_act(
    in_channels: int, out_channels: int, stride: int = 1, negative_slope: float = 0.1
) -> nn.Sequential:
    """3×3 conv (no bias) → BatchNorm → LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(negative_slope, inplace=True),
    )


def depthwise_separable(
    in_channels: int, out_channels: int, stride: int, negative_slope: float = 0.1
) -> nn.Sequential:
    """3×3 depthwise conv → BN → LeakyReLU → 1×1 pointwise conv → BN → LeakyReLU.

    Kept as one flat ``Sequential`` so parameter names match the ImageNet MobileNetV1-0.25
    checkpoint that RetinaFace-style detectors start from.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.LeakyReLU(negative_slope, inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(negative_slope, inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNetV1 with width 0.25, returning strides 8, 16 and 32.

    Input ``(B, 3, H, W)``; outputs three maps with 64, 128 and 256 channels of spatial size
    ``ceil(H / s) × ceil(W / s)`` for ``s`` in (8, 16, 32). 213,072 parameters.
    """

    out_channels: tuple[int, int, int] = (64, 128, 256)

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn_act(3, 8, stride=2),
            depthwise_separable(8, 16, 1),
            depthwise_separable(16, 32, 2),
            depthwise_separable(32, 32, 1),
            depthwise_separable(32, 64, 2),
            depthwise_separable(64, 64, 1),
        )
        self.stage2 = nn.Sequential(
            depthwise_separable(64, 128, 2),
            *[depthwise_separable(128, 128, 1) for _ in range(5)],
        )
        self.stage3 = nn.Sequential(
            depthwise_separable(128, 256, 2),
            depthwise_separable(256, 256, 1),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return [c3, c4, c5]

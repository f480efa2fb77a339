"""Context modules: SSH (deformable for V1, grouped for V2) and channel-shuffle blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featherface.models.deform import DeformConv2d


class SSH(nn.Module):
    """Single Stage Headless context module: 3×3, 5×5 and 7×7 receptive-field branches.

    The 5×5 and 7×7 branches share their first conv. Output is ``relu(cat(b3, b5, b7))`` with
    ``out/2 + out/4 + out/4`` channels. Built by :func:`deformable_ssh` or :func:`grouped_ssh`.
    """

    def __init__(
        self,
        conv3x3: nn.Module,
        conv5x5_1: nn.Module,
        conv5x5_2: nn.Module,
        conv7x7_2: nn.Module,
        conv7x7_3: nn.Module,
    ) -> None:
        super().__init__()
        self.conv3x3 = conv3x3
        self.conv5x5_1 = conv5x5_1
        self.conv5x5_2 = conv5x5_2
        self.conv7x7_2 = conv7x7_2
        self.conv7x7_3 = conv7x7_3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self.conv5x5_1(x)
        branches = (self.conv3x3(x), self.conv5x5_2(shared), self.conv7x7_3(self.conv7x7_2(shared)))
        return F.relu(torch.cat(branches, dim=1))


def _deform_bn(in_channels: int, out_channels: int, negative_slope: float | None) -> nn.Sequential:
    layers: list[nn.Module] = [DeformConv2d(in_channels, out_channels), nn.BatchNorm2d(out_channels)]
    if negative_slope is not None:
        layers.append(nn.LeakyReLU(negative_slope, inplace=True))
    return nn.Sequential(*layers)


def deformable_ssh(in_channels: int, out_channels: int, negative_slope: float = 0.1) -> SSH:
    """FeatherFace V1 SSH: every 3×3 conv is a modulated deformable conv (DCNv2)."""
    quarter = out_channels // 4
    return SSH(
        _deform_bn(in_channels, out_channels // 2, None),
        _deform_bn(in_channels, quarter, negative_slope),
        _deform_bn(quarter, quarter, None),
        _deform_bn(quarter, quarter, negative_slope),
        _deform_bn(quarter, quarter, None),
    )


def _conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, groups: int = 1, relu: bool = False
) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


def grouped_ssh(in_channels: int, out_channels: int, groups: int = 4) -> SSH:
    """FeatherFace V2 "SSH_Grouped": 1×1 reductions then grouped 3×3 convs, no deformable conv."""
    half, quarter = out_channels // 2, out_channels // 4
    return SSH(
        nn.Sequential(*_conv_bn(in_channels, half, 1, relu=True), *_conv_bn(half, half, 3, groups=groups)),
        nn.Sequential(
            *_conv_bn(in_channels, quarter, 1, relu=True),
            *_conv_bn(quarter, quarter, 3, groups=groups),
        ),
        nn.Sequential(*_conv_bn(quarter, quarter, 3, groups=groups)),
        nn.Sequential(*_conv_bn(quarter, quarter, 3, groups=groups, relu=True)),
        nn.Sequential(*_conv_bn(quarter, quarter, 3, groups=groups)),
    )


class ChannelShuffle(nn.Module):
    """Channel shuffle: ``(B, C, H, W)`` viewed as ``(B, C/g, g, H, W)``, the two middle axes swapped."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        x = x.reshape(batch, channels // self.groups, self.groups, height, width)
        return x.transpose(1, 2).reshape(batch, channels, height, width)


def shuffle_block(channels: int) -> nn.Sequential:
    """FeatherFace V1 shuffle block: shuffle(2) → 1×1 reduce → 3×3 depthwise → 1×1 expand → ReLU."""
    half = channels // 2
    return nn.Sequential(
        ChannelShuffle(2),
        nn.Conv2d(channels, half, 1, bias=False),
        nn.BatchNorm2d(half),
        nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False),
        nn.BatchNorm2d(half),
        nn.Conv2d(half, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )


def light_shuffle_block(channels: int, groups: int = 4) -> nn.Sequential:
    """FeatherFace V2 shuffle block: shuffle(g) → grouped 1×1 reduce → grouped 1×1 expand."""
    half = channels // 2
    return nn.Sequential(
        ChannelShuffle(groups),
        *_conv_bn(channels, half, 1, groups=groups, relu=True),
        *_conv_bn(half, channels, 1, groups=groups, relu=True),
    )

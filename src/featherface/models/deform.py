"""Modulated deformable convolution (DCNv2) as used in FeatherFace V1's context modules."""

from __future__ import annotations

import torch
import torchvision.ops
from torch import nn


class DeformConv2d(nn.Module):
    """3×3 modulated deformable conv, stride 1, padding 1, no bias.

    Offsets ``(B, 18, H, W)`` come from a 3×3 conv of the input; the modulation mask
    ``(B, 9, H, W)`` is ``2·sigmoid(conv(x))``. ``(B, C_in, H, W) → (B, C_out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.offset_conv = nn.Conv2d(in_channels, 18, 3, padding=1)
        self.mask_conv = nn.Conv2d(in_channels, 9, 3, padding=1)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)
        nn.init.zeros_(self.mask_conv.weight)
        nn.init.zeros_(self.mask_conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x)
        mask = 2.0 * torch.sigmoid(self.mask_conv(x))
        return torchvision.ops.deform_conv2d(x, offset, self.weight, padding=(1, 1), mask=mask)

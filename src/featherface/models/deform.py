"""Modulated deformable convolution (DCNv2) as used in FeatherFace V1's context modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featherface.models.dcn import (
    DEFORM_IMPLS,
    DeformImpl,
    deform_conv3x3,
    gather,
    pad_input,
    planar_offsets,
    project,
    projection,
    sampling_plan,
)


class DeformConv2d(nn.Module):
    """3×3 modulated deformable conv, stride 1, padding 1, no bias (until BN folding adds one).

    Offsets ``(B, 18, H, W)`` come from a 3×3 conv of the input; the modulation mask
    ``(B, 9, H, W)`` is ``2·sigmoid(conv(x))``. ``(B, C_in, H, W) → (B, C_out, H, W)``.

    ``impl`` picks the kernel: ``"fast"`` (default; gather + matmul, exportable) or
    ``"torchvision"`` (``torchvision.ops.deform_conv2d``, the original implementation's op).
    Both give the same outputs to float32 rounding; see :func:`set_deform_impl`.
    """

    def __init__(self, in_channels: int, out_channels: int, impl: DeformImpl = "fast") -> None:
        super().__init__()
        self.offset_conv = nn.Conv2d(in_channels, 18, 3, padding=1)
        self.mask_conv = nn.Conv2d(in_channels, 9, 3, padding=1)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.register_parameter("bias", None)
        self.impl = impl
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)
        nn.init.zeros_(self.mask_conv.weight)
        nn.init.zeros_(self.mask_conv.bias)

    def offset_mask_conv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight ``(27, C_in, 3, 3)`` and bias ``(27,)`` of one conv making planar offsets
        (see :func:`~featherface.models.dcn.planar_offsets`) followed by the mask logits."""
        weight = torch.cat((planar_offsets(self.offset_conv.weight, dim=0), self.mask_conv.weight))
        bias = torch.cat((planar_offsets(self.offset_conv.bias, dim=0), self.mask_conv.bias))
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "torchvision":
            offset, mask = self.offset_conv(x), 2.0 * torch.sigmoid(self.mask_conv(x))
            return deform_conv3x3(x, offset, mask, self.weight, self.bias, impl="torchvision")
        offset, mask_logits = F.conv2d(x, *self.offset_mask_conv(), padding=1).split((18, 9), dim=1)
        plan = sampling_plan(offset, 2.0 * torch.sigmoid(mask_logits))
        return gather(project(pad_input(x), projection(self.weight)), plan, self.bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, impl={self.impl!r}"


def set_deform_impl(model: nn.Module, impl: DeformImpl) -> nn.Module:
    """Switch every :class:`DeformConv2d` in ``model`` to ``impl`` in place; returns ``model``."""
    if impl not in DEFORM_IMPLS:
        raise ValueError(f"unknown deformable conv impl {impl!r}; use one of {DEFORM_IMPLS}")
    for module in model.modules():
        if isinstance(module, DeformConv2d):
            module.impl = impl
    return model

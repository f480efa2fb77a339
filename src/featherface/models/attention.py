"""CBAM attention (channel gate + spatial gate): one CBAM per level (V1) or one weight-shared CBAM (V2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featherface.models.padding import active_region


def global_pools(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global average and max over the valid (unpadded) region: ``(B, C, H, W) → 2 × (B, C)``."""
    region = active_region()
    if region is None:
        return x.mean(dim=(2, 3)), x.amax(dim=(2, 3))
    mask = region.mask(x.shape[-2], x.shape[-1], x.device, x.dtype)
    mean = (x * mask).sum(dim=(2, 3)) / mask.sum(dim=(2, 3))
    return mean, x.masked_fill(mask == 0, float("-inf")).amax(dim=(2, 3))


class ChannelGate(nn.Module):
    """Channel attention: a shared MLP over global average- and max-pooled features.

    ``(B, C, H, W) → (B, C, H, W)``, each channel scaled by ``sigmoid(mlp(avg) + mlp(max))``.
    """

    def __init__(self, channels: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.stack(global_pools(x))  # (2, B, C)
        logits = self.fc2(F.relu(self.fc1(pooled))).sum(dim=0)
        return x * torch.sigmoid(logits)[:, :, None, None]


def channel_max_and_mean(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) → (B, 2, H, W)``: the channel-wise max and mean a spatial gate reads."""
    return torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)


class SpatialGate(nn.Module):
    """Spatial attention: 7×7 conv + BN over the channel-wise max and mean maps.

    ``(B, C, H, W) → (B, C, H, W)``, each position scaled by a sigmoid gate.
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, 1, H, W)`` sigmoid gate for ``x``."""
        return torch.sigmoid(self.bn(self.conv(channel_max_and_mean(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


def gated_residual(x: torch.Tensor, attended: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``relu(x + attended · gate)``: the residual add + ReLU that FeatherFace wraps around each
    CBAM block (``attended`` the channel-gated ``x``, ``gate`` its ``(B, 1, H, W)`` spatial gate),
    as one multiply-add and an in-place ReLU."""
    return torch.addcmul(x, attended, gate).relu_()


def attend(x: torch.Tensor, channel_gate: ChannelGate, spatial_gate: SpatialGate) -> torch.Tensor:
    """``relu(x + spatial_gate(channel_gate(x)))``: a CBAM block with its residual add + ReLU
    (see :func:`gated_residual`)."""
    attended = channel_gate(x)
    return gated_residual(x, attended, spatial_gate.gate(attended))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel gate then spatial gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.channel_gate = ChannelGate(channels, channels // reduction)
        self.spatial_gate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_gate(self.channel_gate(x))


class SharedCBAM(nn.Module):
    """CBAM_Plus: one bias-free channel gate per level and one spatial gate shared by all.

    Takes and returns a list of feature maps, one per pyramid level.
    """

    def __init__(self, channels: tuple[int, ...], reduction: int = 32, min_hidden: int = 4) -> None:
        super().__init__()
        self.channel_gates = nn.ModuleList(
            ChannelGate(c, max(c // reduction, min_hidden), bias=False) for c in channels
        )
        self.spatial_gate = SpatialGate()

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level ``relu(x + attention(x))`` (see :func:`attend`)."""
        return [attend(x, gate, self.spatial_gate) for gate, x in zip(self.channel_gates, features)]


class PerLevelCBAM(nn.Module):
    """An independent :class:`CBAM` for each pyramid level, each with a residual add + ReLU (V1)."""

    def __init__(self, channels: tuple[int, ...], reduction: int = 16) -> None:
        super().__init__()
        self.levels = nn.ModuleList(CBAM(c, reduction) for c in channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level ``relu(x + cbam(x))`` (see :func:`attend`)."""
        return [attend(x, cbam.channel_gate, cbam.spatial_gate) for cbam, x in zip(self.levels, features)]

"""Detection heads: per-level 1×1 convs (V1) and a shared multi-task head (V2)."""

from __future__ import annotations

import torch
from torch import nn


def flatten_level(x: torch.Tensor, values_per_anchor: int) -> torch.Tensor:
    """``(B, A·k, H, W) → (B, H·W·A, k)`` in row, column, anchor order."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, values_per_anchor)


class SharedHead(nn.Module):
    """3×3 conv trunk (conv-BN-ReLU) feeding 1×1 class, box and landmark outputs.

    ``(B, C, H, W) → (B, H·W·A, 2), (B, H·W·A, 4), (B, H·W·A, 10)``.
    """

    def __init__(self, in_channels: int, trunk_channels: int, num_anchors: int, groups: int = 1) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, trunk_channels, 3, padding=1, groups=groups, bias=False),
            nn.BatchNorm2d(trunk_channels),
            nn.ReLU(inplace=True),
        )
        self.cls = nn.Conv2d(trunk_channels, num_anchors * 2, 1)
        self.box = nn.Conv2d(trunk_channels, num_anchors * 4, 1)
        self.landmark = nn.Conv2d(trunk_channels, num_anchors * 10, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        trunk = self.trunk(x)
        return (
            flatten_level(self.box(trunk), 4),
            flatten_level(self.cls(trunk), 2),
            flatten_level(self.landmark(trunk), 10),
        )

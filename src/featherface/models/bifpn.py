"""BiFPN cells (EfficientDet's bidirectional pyramid with fast normalised fusion) on P3–P5."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from featherface.models.padding import active_region, mask_padding
from featherface.models.tracing import is_exporting


def _pool_with_leading_pad(x: torch.Tensor, top: int, left: int) -> torch.Tensor:
    """Zero-pad ``top`` / ``left`` rows / columns before and what ``ceil(size / 2)`` windows need
    after (``2·ceil(size / 2) + 1 − size − lead = size mod 2 + 1 − lead``), then pool. The sizes
    enter only through ``mod 2``, so a traced size gives the same arithmetic in an exported graph."""
    height, width = x.shape[-2:]
    bottom = height % 2 + 1 - top
    right = width % 2 + 1 - left
    return F.max_pool2d(F.pad(x, (left, right, top, bottom)), 3, 2)


def _pool_same_windows(x: torch.Tensor) -> torch.Tensor:
    """3×3 stride-2 max pool over the windows of TensorFlow "same" padding (one leading row /
    column for odd sizes), the padding itself ignored (PyTorch's implicit padding, which no window
    takes a maximum from): ONNX ``MaxPool`` with ``auto_pad="SAME_UPPER"``."""
    height, width = x.shape[-2:]
    return F.max_pool2d(x, 3, 2, padding=(height % 2, width % 2), ceil_mode=True)


def _pool_zero_padded_borders(x: torch.Tensor) -> torch.Tensor:
    """:func:`max_pool_same` without materialising the padded copy: :func:`_pool_same_windows`,
    then raise to 0 the border rows / columns whose windows hold one of the "same" padding's
    zeros: always the last, the first for an odd size. ``max(window ∪ {0}) = max(max(window), 0)``."""
    height, width = x.shape[-2:]
    pooled = _pool_same_windows(x)
    pooled[..., -1, :].clamp_(min=0)
    pooled[..., -1].clamp_(min=0)
    if height % 2:
        pooled[..., 0, :].clamp_(min=0)
    if width % 2:
        pooled[..., 0].clamp_(min=0)
    return pooled


class _SameUpperMaxPool(torch.autograd.Function):
    """:func:`_pool_same_windows` recorded as one ONNX ``MaxPool`` with ``auto_pad="SAME_UPPER"``:
    the node keeps no size arithmetic, so ONNX Runtime can run it in its blocked channel layout
    straight from the conv before it."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return _pool_same_windows(x)

    @staticmethod
    def symbolic(g: torch.Graph, x: torch.Value) -> torch.Value:
        return g.op("MaxPool", x, kernel_shape_i=[3, 3], strides_i=[2, 2], auto_pad_s="SAME_UPPER")


def _pool_same_onnx(x: torch.Tensor) -> torch.Tensor:
    """:func:`max_pool_same` as ONNX records it: the "SAME_UPPER" pool, then the border rows /
    columns whose windows hold one of the zero padding's zeros (the last, and the first for an
    odd size) raised to at least 0 by one ``Max`` against a ``(h, w)`` map of 0 / −inf."""
    height, width = x.shape[-2:]
    pooled = _SameUpperMaxPool.apply(x)
    rows = torch.arange(pooled.shape[-2], device=x.device)
    cols = torch.arange(pooled.shape[-1], device=x.device)
    border_rows = (rows == pooled.shape[-2] - 1) | ((rows == 0) & (height % 2 == 1))
    border_cols = (cols == pooled.shape[-1] - 1) | ((cols == 0) & (width % 2 == 1))
    floor = torch.where(border_rows[:, None] | border_cols[None, :], 0.0, float("-inf"))
    return torch.maximum(pooled, floor.to(x.dtype))


def max_pool_same(x: torch.Tensor) -> torch.Tensor:
    """3×3 stride-2 max pool with TensorFlow "same" zero padding: ``(H, W) → ceil(H/2), ceil(W/2)``.

    "Same" padding puts the extra zero row/column at the start only for odd sizes. In a padded
    batch (see :mod:`featherface.models.padding`) that parity is each image's own, so the pool is
    taken per image with the alignment its unpadded size would have had.
    """
    height, width = x.shape[-2:]
    region = active_region()
    if region is None:
        if torch.onnx.is_in_onnx_export():
            return _pool_same_onnx(x)
        if is_exporting():
            return _pool_with_leading_pad(x, height % 2, width % 2)
        return _pool_zero_padded_borders(x)
    x = mask_padding(x)
    odd = (region.valid_sizes(height, width) % 2).to(x.device)
    pooled = None
    for top in (0, 1):
        for left in (0, 1):
            chosen = (odd[:, 0] == top) & (odd[:, 1] == left)
            if not bool(chosen.any()):
                continue
            candidate = _pool_with_leading_pad(x, top, left)
            pooled = (
                candidate if pooled is None else torch.where(chosen[:, None, None, None], candidate, pooled)
            )
    return pooled


def upsample_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour resize of ``x`` to the spatial size of ``reference``."""
    return F.interpolate(x, size=reference.shape[-2:], mode="nearest")


class SeparableConv(nn.Module):
    """EfficientDet separable conv: 3×3 depthwise (no bias) → 1×1 pointwise (bias) → BN."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels, momentum=0.01, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pointwise(self.depthwise(x)))


class LightSeparableConv(nn.Module):
    """Depthwise-separable conv with a BN + ReLU between the two halves and no biases."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.pointwise(F.relu(self.bn1(self.depthwise(x)))))


def lateral(in_channels: int, out_channels: int, bias: bool = True) -> nn.Sequential:
    """1×1 conv + BN that brings a backbone level to the pyramid width."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=bias),
        nn.BatchNorm2d(out_channels, momentum=0.01, eps=1e-3),
    )


#: The fusion-weight vectors of a :class:`BiFPNCell`, in the order the cell uses them.
FUSION_WEIGHTS = ("p4_w1", "p3_w1", "p4_w2", "p5_w2")


class BiFPNCell(nn.Module):
    """One BiFPN cell over three levels (strides 8, 16, 32).

    Top-down: ``P4_td = conv(swish(w·[P4, up(P5)]))``, ``P3_out = conv(swish(w·[P3, up(P4_td)]))``;
    bottom-up: ``P4_out = conv(swish(w·[P4, P4_td, down(P3_out)]))``,
    ``P5_out = conv(swish(w·[P5, down(P4_out)]))``, with fast normalised fusion
    ``w = relu(w) / (sum(relu(w)) + 1e-4)``.

    Args:
        channels: pyramid width.
        in_channels: backbone widths for the first cell (adds 1×1 laterals); ``None`` for later cells.
        conv_block: builds the conv applied after each fusion.
        bottom_up_laterals: the first cell feeds the bottom-up path through a second set of
            P4/P5 laterals (EfficientDet / FeatherFace V1) instead of reusing the top-down ones.
        p5_weight_slots: length of the P5 fusion-weight vector. FeatherFace V1 stores 3 and fuses
            with the first 2 (all 3 enter the normalisation); 2 is the clean form.
        lateral_bias: whether the 1×1 laterals have a bias.
    """

    def __init__(
        self,
        channels: int,
        in_channels: tuple[int, int, int] | None = None,
        conv_block: Callable[[int], nn.Module] = SeparableConv,
        bottom_up_laterals: bool = True,
        p5_weight_slots: int = 2,
        lateral_bias: bool = True,
    ) -> None:
        super().__init__()
        self.epsilon = 1e-4
        self.conv4_up = conv_block(channels)
        self.conv3_up = conv_block(channels)
        self.conv4_down = conv_block(channels)
        self.conv5_down = conv_block(channels)
        self.first = in_channels is not None
        self.bottom_up_laterals = self.first and bottom_up_laterals
        if in_channels is not None:
            self.lateral_p3 = lateral(in_channels[0], channels, lateral_bias)
            self.lateral_p4 = lateral(in_channels[1], channels, lateral_bias)
            self.lateral_p5 = lateral(in_channels[2], channels, lateral_bias)
            if self.bottom_up_laterals:
                self.lateral_p4_bottom_up = lateral(in_channels[1], channels, lateral_bias)
                self.lateral_p5_bottom_up = lateral(in_channels[2], channels, lateral_bias)
        self.p4_w1 = nn.Parameter(torch.ones(2))
        self.p3_w1 = nn.Parameter(torch.ones(2))
        self.p4_w2 = nn.Parameter(torch.ones(3))
        self.p5_w2 = nn.Parameter(torch.ones(p5_weight_slots))
        self.fixed_weights: dict[str, list[float]] | None = None

    def _weights(self, raw: torch.Tensor) -> torch.Tensor:
        raw = F.relu(raw)
        return raw / (raw.sum() + self.epsilon)

    def fix_fusion_weights(self) -> None:
        """Keep the normalised fusion weights as constants (inference only; ``fuse_model`` calls
        this): no weight arithmetic per call, and each weighted sum takes one op per input."""
        with torch.no_grad():
            self.fixed_weights = {
                name: self._weights(getattr(self, name)).tolist() for name in FUSION_WEIGHTS
            }

    def _fuse(self, name: str, *inputs: torch.Tensor) -> torch.Tensor:
        """``swish(Σ wᵢ·xᵢ)``: fast normalised fusion with the weight vector ``name``, then the
        swish that every fusion feeds its conv (in place on the new sum)."""
        if self.fixed_weights is not None:
            constants = self.fixed_weights[name]
            fused = inputs[0] * constants[0]
            for x, w in zip(inputs[1:], constants[1:]):
                fused = fused.add_(x, alpha=w)
            return F.silu(fused, inplace=True)
        weights = self._weights(getattr(self, name))
        fused = weights[0] * inputs[0]
        for i, x in enumerate(inputs[1:], start=1):
            fused = fused + weights[i] * x
        return F.silu(fused, inplace=True)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = features
        if self.first:
            p3_in, p4_in, p5_in = self.lateral_p3(p3), self.lateral_p4(p4), self.lateral_p5(p5)
        else:
            p3_in, p4_in, p5_in = p3, p4, p5

        p4_td = self.conv4_up(self._fuse("p4_w1", p4_in, upsample_to(p5_in, p4_in)))
        p3_out = self.conv3_up(self._fuse("p3_w1", p3_in, upsample_to(p4_td, p3_in)))

        if self.bottom_up_laterals:
            p4_in, p5_in = self.lateral_p4_bottom_up(p4), self.lateral_p5_bottom_up(p5)
        p4_out = self.conv4_down(self._fuse("p4_w2", p4_in, p4_td, max_pool_same(p3_out)))
        p5_out = self.conv5_down(self._fuse("p5_w2", p5_in, max_pool_same(p4_out)))
        return [p3_out, p4_out, p5_out]

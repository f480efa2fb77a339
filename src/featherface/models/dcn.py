"""Modulated deformable 3×3 convolution (DCNv2) as a functional op: a fast gather path and torchvision's.

The fast path projects the input through every kernel tap first (one matmul to ``9·C_out`` values
per pixel), then forms each output pixel as a weighted sum of 36 projected rows — 9 taps × 4
bilinear corners, weighted by the bilinear weight times the modulation mask. That sum is one
``embedding_bag`` call in eager mode and a ``Gather``, a multiply and a sum when exported (ONNX,
``torch.export``), with the same numbers. Sampling follows ``torchvision.ops.deform_conv2d``: a tap
at ``(y, x)`` reads zero unless ``-1 < y < H`` and ``-1 < x < W``, and each corner outside the
image reads zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision.ops

from featherface.models.tracing import is_exporting

DeformImpl = Literal["fast", "torchvision"]
DEFORM_IMPLS: tuple[str, ...] = ("fast", "torchvision")

TAPS = 9
_SAMPLES = 4 * TAPS
#: Channels of one deformable conv's offset / mask conv: 18 planar offsets, then 9 mask logits.
PLAN_CHANNELS = 3 * TAPS
#: Table rows are addressed with int32: enough for ``B·(H+3)·(W+3)·9 < 2**31`` at a level's size.
INDEX_DTYPE = torch.int32


def _check_shapes(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"deform_conv3x3 expects x of shape (B, C, H, W), got {tuple(x.shape)}")
    batch, channels, height, width = x.shape
    if weight.shape[1:] != (channels, 3, 3):
        raise ValueError(
            f"weight must be (C_out, {channels}, 3, 3) for an input with {channels} channels, "
            f"got {tuple(weight.shape)}"
        )
    for name, tensor, depth in (("offset", offset, 2 * TAPS), ("mask", mask, TAPS)):
        if tensor.shape != (batch, depth, height, width):
            raise ValueError(
                f"{name} must be ({batch}, {depth}, {height}, {width}) for x of shape {tuple(x.shape)}, "
                f"got {tuple(tensor.shape)}"
            )


def planar_offsets(offset: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Reorder the 18 offsets along ``dim`` from torchvision's ``(dy_0, dx_0, …, dy_8, dx_8)`` to
    the planar ``(dy_0 … dy_8, dx_0 … dx_8)`` that :class:`SamplingPlan` reads: ``dim=1`` for
    ``(B, 18, H, W)`` offsets, ``dim=0`` for the weight or bias of the conv that makes them.
    """
    return offset.unflatten(dim, (TAPS, 2)).transpose(dim, dim + 1).flatten(dim, dim + 1)


class SamplingPlan:
    """Where and how strongly each output pixel of one level reads that level's projection table.

    ``index`` and ``weights`` are dense ``(B·H·W, 36)`` rows: per output pixel, 4 bilinear corners
    × 9 taps. Table row ``((b·(H+3) + y)·(W+3) + x)·9 + k`` holds tap ``k``'s projection of pixel
    ``(y, x)`` of the input zero-padded by 1 before and 2 after each spatial axis (see
    :func:`pad_input`); clamping sample coordinates to ``[-1, H] × [-1, W]`` keeps every corner
    inside that table and reproduces torchvision's zero padding exactly. ``shape`` is ``(B, H, W)``;
    ``bag_starts`` ``(B·H·W,)`` = ``0, 36, 72, …``, where each pixel's samples start in the flattened
    rows. Built by :func:`sampling_plan` (one conv) or :func:`sampling_plans` (several at once).
    """

    def __init__(
        self,
        index: torch.Tensor,
        weights: torch.Tensor,
        shape: tuple[int, int, int],
        bag_starts: torch.Tensor,
    ) -> None:
        self.index = index
        self.weights = weights
        self.shape = shape
        self.bag_starts = bag_starts


class SamplingGrid:
    """Per batch and level sizes, the constants every :class:`SamplingPlan` on those sizes needs.

    Pixels are numbered level by level and, within a level, ``n = (b·H + y)·W + x`` (the row order
    of channels-last memory), ``N`` in all. Per pixel and tap: ``base`` ``(N, 2, 9)`` the
    undeformed sample row and column, ``high`` ``(N, 2, 9)`` the upper clamp bounds ``(H, W)`` of
    the pixel's level (the lower one is ``-1`` for both axes), ``row_stride`` ``(N, 9)`` table rows
    per padded image row, and ``corners`` ``(N, 4, 9)`` the table-row offsets of the four bilinear
    corners plus the padding shift and the first table row of the pixel's image. Each level reads
    its own table.

    Args:
        batch: images per batch.
        sizes: ``(H, W)`` of each level, in the order the plans stack them.
        device: where the constants live.
    """

    def __init__(self, batch: int, sizes: Sequence[tuple[int, int]], device: torch.device) -> None:
        # No Python branch depends on a size, so traced and exported graphs stay size-generic.
        self.shapes = [(batch, height, width) for height, width in sizes]
        self.pixels = [batch * height * width for height, width in sizes]
        levels = [self._level(batch, height, width, device) for height, width in sizes]
        self.base, self.high, self.row_stride, self.corners = (torch.cat(parts) for parts in zip(*levels))
        self.bag_starts = [
            torch.arange(pixels, device=device, dtype=INDEX_DTYPE) * _SAMPLES for pixels in self.pixels
        ]

    @staticmethod
    def _level(batch: int, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        kernel = torch.arange(-1, 2, device=device, dtype=torch.float32)
        tap_rows = kernel[:, None].expand(3, 3).reshape(TAPS)
        tap_cols = kernel[None, :].expand(3, 3).reshape(TAPS)
        rows = torch.arange(height, device=device, dtype=torch.float32)[:, None, None] + tap_rows
        cols = torch.arange(width, device=device, dtype=torch.float32)[None, :, None] + tap_cols
        rows, cols = rows.expand(height, width, TAPS), cols.expand(height, width, TAPS)
        base = torch.stack((rows, cols), dim=2).reshape(1, -1, 2, TAPS)
        high = torch.stack((rows * 0 + height, cols * 0 + width), dim=2).reshape(1, -1, 2, TAPS)
        base, high = (t.repeat(batch, 1, 1, 1).reshape(-1, 2, TAPS) for t in (base, high))
        row_stride = (width + 3) * TAPS
        images = torch.arange(batch, device=device, dtype=INDEX_DTYPE) * ((height + 3) * row_stride)
        image_rows = images.repeat_interleave(height * width)[:, None]
        taps = torch.arange(TAPS, device=device, dtype=INDEX_DTYPE)
        corners = torch.stack((taps, taps + TAPS, taps + row_stride, taps + (row_stride + TAPS)))
        corners = (corners + (row_stride + TAPS))[None] + image_rows[:, :, None]
        strides = (image_rows * 0 + row_stride).expand(-1, TAPS).contiguous()
        return base, high, strides, corners

    def split(self, index: torch.Tensor, weights: torch.Tensor) -> list[SamplingPlan]:
        """Cut ``(N, 36)`` rows into one :class:`SamplingPlan` per level (views, no copy)."""
        plans, start = [], 0
        for pixels, shape, bag_starts in zip(self.pixels, self.shapes, self.bag_starts):
            end = start + pixels
            plans.append(SamplingPlan(index[start:end], weights[start:end], shape, bag_starts))
            start = end
        return plans


def _plan_rows(
    offset: torch.Tensor, mask: torch.Tensor, grid: SamplingGrid
) -> tuple[torch.Tensor, torch.Tensor]:
    """``offset (N, 2, 9)`` ``(dy, dx)`` per pixel and tap and ``mask (N, 9)`` → ``index`` and
    ``weights`` ``(N, 36)``. Pixel-major throughout, as channels-last conv outputs arrive and as
    ``embedding_bag`` reads: no transposing copy on the way in or out."""
    sample = torch.minimum((offset + grid.base).clamp_min(-1), grid.high)
    low = sample.floor()
    frac = sample - low
    # (N, 2 axes, 2 sides, 9): per axis the weights (1 − f, f) of the lower and the upper neighbour
    sides = torch.stack((1 - frac, frac), dim=2)
    rows = sides[:, 0] * mask[:, None]  # (top, bottom), modulated
    # outer product over (top, bottom) × (left, right): corners in the order of ``grid.corners``
    weights = rows[:, :, None] * sides[:, 1, None]
    low = low.to(INDEX_DTYPE)
    top_left = low[:, 0] * grid.row_stride + low[:, 1] * TAPS
    index = top_left[:, None] + grid.corners
    return index.view(-1, _SAMPLES), weights.view(-1, _SAMPLES)


def sampling_plan(offset: torch.Tensor, mask: torch.Tensor, grid: SamplingGrid | None = None) -> SamplingPlan:
    """The plan of one deformable conv.

    Args:
        offset: ``(B, 18, H, W)`` in the planar order of :func:`planar_offsets`.
        mask: ``(B, 9, H, W)`` modulation.
        grid: the constants for this size, shared by several plans (built when ``None``).
    """
    batch, _, height, width = offset.shape
    grid = grid or SamplingGrid(batch, [(height, width)], offset.device)
    dtype = torch.promote_types(offset.dtype, torch.float32)  # half offsets sample in float32
    offset = offset.to(dtype).permute(0, 2, 3, 1).reshape(-1, 2, TAPS)
    mask = mask.to(dtype).permute(0, 2, 3, 1).reshape(-1, TAPS)
    return grid.split(*_plan_rows(offset, mask, grid))[0]


def sampling_plans(offset_logits: Sequence[torch.Tensor], grid: SamplingGrid) -> list[list[SamplingPlan]]:
    """The plans of ``P`` deformable convs per level, each conv's levels computed at once.

    Args:
        offset_logits: per level of ``grid`` ``(B, 27·P, H, W)``: for each conv 18 planar offsets
            then 9 mask logits (the mask is their ``sigmoid``); channels-last memory reads
            without a copy.
        grid: the constants for these levels.

    Returns:
        ``plans[p][level]``.
    """
    channels = offset_logits[0].shape[1]
    per_level = [logits.permute(0, 2, 3, 1).reshape(-1, channels) for logits in offset_logits]
    rows = per_level[0] if len(per_level) == 1 else torch.cat(per_level)
    rows = rows.to(torch.promote_types(rows.dtype, torch.float32))  # half logits sample in float32
    plans = []
    for start in range(0, channels, PLAN_CHANNELS):
        offset = rows[:, start : start + 2 * TAPS].unflatten(1, (2, TAPS))
        mask = torch.sigmoid(rows[:, start + 2 * TAPS : start + PLAN_CHANNELS].contiguous())
        plans.append(grid.split(*_plan_rows(offset, mask, grid)))
    return plans


def pad_input(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) → (B·(H+3)·(W+3), C)``: channels-last rows, zero-padded as the plan expects."""
    return F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 2, 1, 2)).reshape(-1, x.shape[1])


def projection(weight: torch.Tensor) -> torch.Tensor:
    """``(C_out, C_in, 3, 3) → (C_in, 9·C_out)``: the matrix :func:`project` multiplies by."""
    out_channels, channels = weight.shape[:2]
    return weight.permute(1, 2, 3, 0).reshape(channels, TAPS * out_channels)


def project(padded: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """The projection table ``(rows·9, C_out)``: every padded pixel through every tap of the
    conv whose :func:`projection` is ``matrix``."""
    return (padded @ matrix.to(padded.dtype)).reshape(-1, matrix.shape[1] // TAPS)


def gather(table: torch.Tensor, plan: SamplingPlan, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sums of table rows: the conv output ``(B, C_out, H, W)`` in channels-last memory."""
    weights = plan.weights.to(table.dtype)
    if is_exporting():
        rows = table.index_select(0, plan.index.reshape(-1)).reshape(*plan.index.shape, -1)
        out = (rows * weights[..., None]).sum(dim=1)
    else:
        out = F.embedding_bag(
            plan.index.view(-1), table, plan.bag_starts, per_sample_weights=weights.view(-1), mode="sum"
        )
    if bias is not None:
        out = out.add_(bias.to(out.dtype))
    return out.reshape(*plan.shape, -1).permute(0, 3, 1, 2)


def deform_conv3x3(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    impl: DeformImpl = "fast",
) -> torch.Tensor:
    """Modulated deformable 3×3 convolution, stride 1, padding 1, dilation 1, one offset group.

    Args:
        x: input ``(B, C_in, H, W)``.
        offset: ``(B, 18, H, W)`` sampling offsets in pixels, ``(dy, dx)`` per tap, taps in
            row-major order (torchvision's layout).
        mask: ``(B, 9, H, W)`` modulation scalars, one per tap.
        weight: ``(C_out, C_in, 3, 3)``.
        bias: optional ``(C_out,)``.
        impl: ``"fast"`` (project, gather, sum; exportable, differentiable, any device) or
            ``"torchvision"`` (``torchvision.ops.deform_conv2d``, the reference).

    Returns:
        ``(B, C_out, H, W)``; the two implementations agree to float32 rounding (about 1e-5).
    """
    _check_shapes(x, offset, mask, weight)
    if impl == "fast":
        plan = sampling_plan(planar_offsets(offset), mask)
        return gather(project(pad_input(x), projection(weight)), plan, bias)
    if impl == "torchvision":
        return torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)
    raise ValueError(f"unknown deformable conv impl {impl!r}; use one of {DEFORM_IMPLS}")

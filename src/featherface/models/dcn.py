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

from typing import Literal

import torch
import torch.nn.functional as F
import torchvision.ops

from featherface.models.tracing import is_exporting

DeformImpl = Literal["fast", "torchvision"]
DEFORM_IMPLS: tuple[str, ...] = ("fast", "torchvision")

TAPS = 9
_SAMPLES = 4 * TAPS
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


class SamplingGrid:
    """Per batch and input size, the constants every :class:`SamplingPlan` on that size needs.

    Pixels are numbered ``n = (b·H + y)·W + x`` over the whole batch (``N = B·H·W``). ``base``
    ``(2, 9, N)``: undeformed tap rows and columns; ``high`` ``(2, 1, 1)``: the upper clamp
    bounds ``(H, W)`` (the lower one is ``-1`` for both axes); ``row_stride``: table rows per
    padded image row; ``corners`` ``(4, 9, 1)``: table-row offsets of each tap's four bilinear
    corners plus the padding shift; ``image_rows`` ``(N,)``: the first table row of each pixel's
    image.
    """

    def __init__(self, batch: int, height: int, width: int, device: torch.device) -> None:
        # No Python branch depends on the size, so traced and exported graphs stay size-generic.
        kernel = torch.arange(-1, 2, device=device, dtype=torch.float32)
        rows = torch.arange(height, device=device, dtype=torch.float32)[:, None].expand(height, width)
        cols = torch.arange(width, device=device, dtype=torch.float32)[None, :].expand(height, width)
        tap_rows = kernel[:, None].expand(3, 3).reshape(TAPS, 1)
        tap_cols = kernel[None, :].expand(3, 3).reshape(TAPS, 1)
        base = torch.stack((rows.reshape(1, -1) + tap_rows, cols.reshape(1, -1) + tap_cols))
        self.base = base.repeat(1, 1, batch)
        one = torch.ones(1, 1, device=device)
        self.high = torch.stack((one * height, one * width))
        self.row_stride = (width + 3) * TAPS
        image_rows = (height + 3) * self.row_stride
        taps = torch.arange(TAPS, device=device, dtype=INDEX_DTYPE)
        down = self.row_stride
        corners = torch.stack((taps, taps + TAPS, taps + down, taps + (down + TAPS)))
        self.corners = (corners + (down + TAPS))[:, :, None]
        images = torch.arange(batch, device=device, dtype=INDEX_DTYPE) * image_rows
        self.image_rows = images.repeat_interleave(height * width)


class SamplingPlan:
    """Where and how strongly each output pixel reads the projection table.

    ``index`` and ``weights`` are ``(B·H·W, 36)``: per output pixel, 4 bilinear corners × 9 taps.
    Table row ``((b·(H+3) + y)·(W+3) + x)·9 + k`` holds tap ``k``'s projection of pixel ``(y, x)``
    of the input zero-padded by 1 before and 2 after each spatial axis (see :func:`pad_input`);
    clamping sample coordinates to ``[-1, H] × [-1, W]`` keeps every corner inside that table and
    reproduces torchvision's zero padding exactly.

    Args:
        offset: ``(B, 18, H, W)`` in the planar order of :func:`planar_offsets`.
        mask: ``(B, 9, H, W)`` modulation.
        grid: the constants for this size, shared by several plans (built when ``None``).

    The arithmetic runs pixel-innermost (for one contiguous ``(1, C, H, W)`` input it starts
    without a copy); the two results are transposed to pixel-major rows at the end.
    """

    def __init__(self, offset: torch.Tensor, mask: torch.Tensor, grid: SamplingGrid | None = None) -> None:
        batch, _, height, width = offset.shape
        grid = grid or SamplingGrid(batch, height, width, offset.device)
        self.shape = (batch, height, width)
        dtype = torch.promote_types(offset.dtype, torch.float32)  # half offsets sample in float32
        offset = offset.to(dtype).transpose(0, 1).reshape(2, TAPS, -1)  # (2 axes, 9, N): dy, dx
        sample = torch.minimum((offset + grid.base).clamp_min(-1), grid.high)
        low = sample.floor()
        frac = sample - low
        sides = torch.stack((1 - frac, frac), dim=1)  # (2 axes, 2 sides, 9, N)
        rows = sides[0] * mask.to(dtype).transpose(0, 1).reshape(1, TAPS, -1)
        weights = rows[:, None] * sides[1][None]  # (2, 2, 9, N): corners × taps
        low = low.to(INDEX_DTYPE)
        top_left = low[0] * grid.row_stride + low[1] * TAPS + grid.image_rows
        index = top_left[None] + grid.corners  # (4, 9, N)
        # Copy while still 3-d / 4-d: that copy runs in parallel, while a reshape alone would return a
        # strided (N, 36) view that ``embedding_bag`` flattens through a slower 2-d transposing copy.
        self.index = index.permute(2, 0, 1).contiguous().view(-1, _SAMPLES)
        self.weights = weights.permute(3, 0, 1, 2).contiguous().view(-1, _SAMPLES)


def pad_input(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) → (B·(H+3)·(W+3), C)``: channels-last rows, zero-padded as the plan expects."""
    return F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 2, 1, 2)).reshape(-1, x.shape[1])


def project(padded: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The projection table ``(rows·9, C_out)``: every padded pixel through every tap of ``weight``."""
    out_channels, channels = weight.shape[:2]
    projection = weight.permute(1, 2, 3, 0).reshape(channels, TAPS * out_channels)
    return (padded @ projection.to(padded.dtype)).reshape(-1, out_channels)


def gather(table: torch.Tensor, plan: SamplingPlan, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sums of table rows: the conv output ``(B, C_out, H, W)`` in channels-last memory."""
    weights = plan.weights.to(table.dtype)
    if is_exporting():
        rows = table.index_select(0, plan.index.reshape(-1)).reshape(*plan.index.shape, -1)
        out = (rows * weights[..., None]).sum(dim=1)
    else:
        out = F.embedding_bag(plan.index, table, per_sample_weights=weights, mode="sum")
    if bias is not None:
        out = out + bias.to(out.dtype)
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
        return gather(project(pad_input(x), weight), SamplingPlan(planar_offsets(offset), mask), bias)
    if impl == "torchvision":
        return torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)
    raise ValueError(f"unknown deformable conv impl {impl!r}; use one of {DEFORM_IMPLS}")

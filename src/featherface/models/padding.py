"""Padding-invariant batching: exclude the padded border of a batch from every spatial op.

Images of different sizes share a batch by zero-padding them to a common size. Inside
:func:`valid_region`, every layer that looks at neighbours (convs wider than 1×1, deformable
convs, global pooling, "same" max pooling) sees the padded border as it would see the outside
of the unpadded image, so each image's outputs equal those of a single-image forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

import torch
from torch import nn


class ValidRegion:
    """The unpadded size of each image of a padded batch of input size ``(H, W)``."""

    def __init__(self, sizes: Sequence[tuple[int, int]], input_size: tuple[int, int]) -> None:
        self.sizes = torch.tensor(sizes, dtype=torch.long).reshape(-1, 2)
        self.input_size = input_size
        self._masks: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    def valid_sizes(self, height: int, width: int) -> torch.Tensor:
        """``(B, 2)`` valid rows and columns of a feature map of size ``height × width``."""
        stride = torch.tensor(
            [-(-self.input_size[0] // height), -(-self.input_size[1] // width)], dtype=torch.long
        )
        return -(-self.sizes // stride)

    def mask(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``(B, 1, height, width)`` mask, 1 inside each image's valid region and 0 in its padding."""
        key = (height, width, device, dtype)
        if key not in self._masks:
            valid = self.valid_sizes(height, width).to(device)
            rows = torch.arange(height, device=device)[None, :, None] < valid[:, 0, None, None]
            cols = torch.arange(width, device=device)[None, None, :] < valid[:, 1, None, None]
            self._masks[key] = (rows & cols)[:, None].to(dtype)
        return self._masks[key]


_ACTIVE: ContextVar[ValidRegion | None] = ContextVar("featherface_valid_region", default=None)


@contextlib.contextmanager
def valid_region(sizes: Sequence[tuple[int, int]], input_size: tuple[int, int]) -> Iterator[ValidRegion]:
    """Run forward passes on a padded batch: ``sizes`` are the per-image ``(h, w)`` before padding.

    Context-local, so concurrent threads using the same model do not interfere.
    """
    token = _ACTIVE.set(ValidRegion(sizes, input_size))
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


def active_region() -> ValidRegion | None:
    """The :class:`ValidRegion` of the enclosing :func:`valid_region`, or ``None``."""
    return _ACTIVE.get()


def mask_padding(x: torch.Tensor) -> torch.Tensor:
    """Zero the padded border of a ``(B, C, H, W)`` feature map (identity outside :func:`valid_region`)."""
    region = _ACTIVE.get()
    if region is None:
        return x
    return x * region.mask(x.shape[-2], x.shape[-1], x.device, x.dtype)


def _mask_input_hook(module: nn.Module, args: tuple) -> tuple | None:
    if _ACTIVE.get() is None:
        return None
    return (mask_padding(args[0]), *args[1:])


def install_padding_hooks(model: nn.Module, spatial_modules: tuple[type[nn.Module], ...] = ()) -> None:
    """Mask the input of every conv wider than 1×1 (and of each ``spatial_modules`` instance)."""
    for module in model.modules():
        wide_conv = isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1)
        if wide_conv or isinstance(module, spatial_modules):
            module.register_forward_pre_hook(_mask_input_hook)

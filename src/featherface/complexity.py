"""Model complexity: parameter and multiply–accumulate (MAC) counts for a given input size."""

from __future__ import annotations

import torch
from torch import nn

from featherface.models.deform import DeformConv2d


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, height: int = 480, width: int = 640) -> int:
    """Multiply–accumulates of one forward pass on a ``1×3×height×width`` input.

    Counts convolutions and linear layers — the usual convention of detector papers. A
    deformable conv counts as its 3×3 kernel plus its offset and mask convs, whichever kernel
    computes it. Element-wise ops, pooling and bilinear sampling are not counted.
    """
    total = 0

    def conv_hook(module: nn.Conv2d, args: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += (
            output.numel()
            * module.in_channels
            // module.groups
            * module.kernel_size[0]
            * module.kernel_size[1]
        )

    def deform_hook(module: DeformConv2d, args: tuple, output: torch.Tensor) -> None:
        nonlocal total
        positions = output.numel() // output.shape[1]
        offset_channels = module.offset_conv.out_channels + module.mask_conv.out_channels
        total += positions * (output.shape[1] + offset_channels) * module.weight[0].numel()

    def linear_hook(module: nn.Linear, args: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    inside_deform = {
        id(conv)
        for module in model.modules()
        if isinstance(module, DeformConv2d)
        for conv in module.children()
    }
    handles = []
    for module in model.modules():
        if isinstance(module, DeformConv2d):
            handles.append(module.register_forward_hook(deform_hook))
        elif isinstance(module, nn.Conv2d) and id(module) not in inside_deform:
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    try:
        device = next(model.parameters()).device
        with torch.inference_mode():
            model.eval()(torch.zeros(1, 3, height, width, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return total

"""Inference-time fusion: fold batch norms, channel shuffles and shared-input convs into fewer convs.

Every rewrite is exact up to float rounding: a fused model's outputs stay within 1e-4 of the
model it came from. The result is for inference only (its batch norms are gone).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from featherface.models.attention import PerLevelCBAM, SharedCBAM, SpatialGate
from featherface.models.bifpn import BiFPNCell, LightSeparableConv, SeparableConv
from featherface.models.context import SSH, ChannelShuffle
from featherface.models.deform import DeformConv2d
from featherface.models.fused import (
    FusedCBAM,
    FusedDeformContext,
    FusedDeformSSH,
    FusedSSH,
    MergedHeads,
    PointwiseConv,
    copy_pre_hooks,
    dense_weight,
    is_plain_pointwise,
)

ConvLike = nn.Conv2d | DeformConv2d


@torch.no_grad()
def fold_batch_norm(conv: ConvLike, bn: nn.BatchNorm2d) -> ConvLike:
    """Fold an eval-mode ``bn`` that follows ``conv`` into the conv's weight and bias, in place.

    ``bn(conv(x)) = conv'(x)`` with ``W' = W·γ/σ`` per output channel and ``b' = (b − μ)·γ/σ + β``,
    ``σ = sqrt(running_var + eps)``. Returns ``conv``.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics (track_running_stats=False)")
    dtype = conv.weight.dtype
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    weight = conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    conv.weight.copy_(weight.to(dtype))
    conv.bias = nn.Parameter(((bias - bn.running_mean.double()) * scale + bn.bias.double()).to(dtype))
    return conv


@torch.no_grad()
def fold_channel_shuffle(shuffle: ChannelShuffle, conv: nn.Conv2d) -> nn.Conv2d:
    """A dense 1×1 conv equal to ``conv(shuffle(x))``: the permutation moves into the weight."""
    if conv.kernel_size != (1, 1):
        raise ValueError(f"only a 1×1 conv can absorb a channel shuffle, got kernel {conv.kernel_size}")
    channels, groups = conv.in_channels, shuffle.groups
    # shuffled channel j is input channel (j mod C/g)·g + j div C/g
    j = torch.arange(channels, device=conv.weight.device)
    source = (j % (channels // groups)) * groups + j // (channels // groups)
    fused = nn.Conv2d(channels, conv.out_channels, 1, bias=conv.bias is not None).to(conv.weight)
    fused.weight.zero_()
    fused.weight[:, source] = dense_weight(conv)
    if conv.bias is not None:
        fused.bias.copy_(conv.bias)
    return fused


@torch.no_grad()
def ungroup_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """The ungrouped conv equal to a grouped ``conv`` (same output; zeros between the groups)."""
    dense = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(conv.weight)
    dense.weight.copy_(dense_weight(conv))
    if conv.bias is not None:
        dense.bias.copy_(conv.bias)
    return copy_pre_hooks(conv, dense)


def ungroup_convs(model: nn.Module, max_group_width: int | None = None) -> nn.Module:
    """Replace, in place, every grouped conv that is not depthwise by its ungrouped equal (exact:
    the extra weights are zeros); returns ``model``. With ``max_group_width``, only convs whose
    groups read at most that many input channels.

    Both runtimes compute in a blocked channel layout (8 or 16 channels per block): a conv whose
    groups are narrower than a block falls back to slower code (ONNX Runtime converts the layout
    on each side; PyTorch's oneDNN path runs a grouped kernel with most lanes idle), which costs
    more than the zero weights.
    """

    def narrow(module: nn.Module) -> bool:
        grouped = isinstance(module, nn.Conv2d) and 1 < module.groups < module.in_channels
        return grouped and (max_group_width is None or module.in_channels // module.groups <= max_group_width)

    return _replace_children(model, narrow, ungroup_conv)


def _replace_children(
    model: nn.Module, wanted: Callable[[nn.Module], bool], rewrite: Callable[[nn.Module], nn.Module]
) -> nn.Module:
    """Replace, in place, every submodule of ``model`` that is ``wanted`` by its ``rewrite``."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if wanted(child):
                setattr(module, name, rewrite(child))
    return model


def _fold_sequential(seq: nn.Sequential) -> nn.Sequential:
    layers: list[nn.Module] = []
    for layer in seq:
        previous = layers[-1] if layers else None
        if isinstance(layer, nn.BatchNorm2d) and isinstance(previous, nn.Conv2d | DeformConv2d):
            fold_batch_norm(previous, layer)
        elif (
            isinstance(previous, ChannelShuffle)
            and isinstance(layer, nn.Conv2d)
            and layer.kernel_size == (1, 1)
        ):
            layers[-1] = fold_channel_shuffle(previous, layer)
        else:
            layers.append(layer)
    return nn.Sequential(*layers)


def _fuse_module(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        setattr(module, name, _fuse_module(child))
    if isinstance(module, nn.Sequential):
        return _fold_sequential(module)
    if isinstance(module, SeparableConv):
        fold_batch_norm(module.pointwise, module.bn)
        module.bn = nn.Identity()
    elif isinstance(module, LightSeparableConv):
        fold_batch_norm(module.depthwise, module.bn1)
        fold_batch_norm(module.pointwise, module.bn2)
        module.bn1, module.bn2 = nn.Identity(), nn.Identity()
    elif isinstance(module, BiFPNCell):
        module.fix_fusion_weights()
    elif isinstance(module, SpatialGate):
        fold_batch_norm(module.conv, module.bn)
        module.bn = nn.Identity()
    elif isinstance(module, SSH) and isinstance(module.conv3x3[0], DeformConv2d):
        return FusedDeformSSH(module)
    elif isinstance(module, SSH):
        return FusedSSH(module)
    elif isinstance(module, SharedCBAM | PerLevelCBAM):
        return FusedCBAM(module)
    return module


def _merge_heads(heads: nn.Module) -> MergedHeads:
    if hasattr(heads, "box_head"):  # SeparateHeads (V1)
        outputs = list(zip(heads.box_head, heads.class_head, heads.landmark_head))
        return MergedHeads([nn.Identity() for _ in outputs], outputs)
    return MergedHeads([h.trunk for h in heads.levels], [(h.box, h.cls, h.landmark) for h in heads.levels])


#: Grouped convs reading at most this many channels per group run faster ungrouped in eager
#: PyTorch on CPU (V2's 2- and 4-channel groups: about 1 ms of a 640×480 forward pass).
_NARROW_GROUPS = 4


@torch.no_grad()
def fuse_model(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """An inference-only copy of a FeatherFace model with every exact rewrite applied.

    Batch norms fold into the preceding (deformable) convs, channel shuffles into the following
    1×1 convs, the offset / mask convs of deformable convs that share an input into one conv, and
    each level's box / class / landmark convs into one conv; BiFPN fusion weights become
    constants. V1's three deformable SSHs run in lock-step (:class:`FusedDeformContext`); V2's
    grouped SSHs become four dense convs each (:class:`FusedSSH`) and its other grouped convs with
    groups of at most 4 channels dense ones; every CBAM runs its levels batched
    (:class:`FusedCBAM`); 1×1 convs run as matrix products on small maps
    (:class:`PointwiseConv`). With ``channels_last`` the copy keeps its weights and
    activations in channels-last memory (faster on CPU). ``model`` is unchanged.

    Returns:
        the fused model in eval mode; ``model(x)`` and ``fused(x)`` agree within 1e-4.
    """
    fused = copy.deepcopy(model).eval()
    fused = _fuse_module(fused)
    fused.heads = _merge_heads(fused.heads)
    ungroup_convs(fused, max_group_width=_NARROW_GROUPS)
    _replace_children(fused, is_plain_pointwise, PointwiseConv.from_conv)
    if all(isinstance(level, FusedDeformSSH) for level in fused.context):
        fused.context = FusedDeformContext(list(fused.context))
    fused.fused = True
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    return fused

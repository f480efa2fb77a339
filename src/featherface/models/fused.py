"""Inference-only layers that :func:`featherface.models.fuse.fuse_model` swaps in: exact rewrites."""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from featherface.models.attention import (
    PerLevelCBAM,
    SharedCBAM,
    channel_max_and_mean,
    gated_residual,
    global_pools,
)
from featherface.models.dcn import (
    PLAN_CHANNELS,
    SamplingGrid,
    SamplingPlan,
    gather,
    pad_input,
    project,
    projection,
    sampling_plans,
)
from featherface.models.deform import DeformConv2d
from featherface.models.heads import flatten_level
from featherface.models.padding import active_region, mask_padding
from featherface.models.tracing import is_exporting

ModuleT = TypeVar("ModuleT", bound=nn.Module)
_SSH_CONVS = ("conv3x3", "conv5x5_1", "conv5x5_2", "conv7x7_2", "conv7x7_3")


def _merged_offset_conv(*convs: DeformConv2d) -> nn.Conv2d:
    """One 3×3 conv making ``[offsets_1, mask_logits_1, offsets_2, …]`` for convs sharing an input."""
    parts = [conv.offset_mask_conv() for conv in convs]
    merged = nn.Conv2d(convs[0].weight.shape[1], PLAN_CHANNELS * len(convs), 3, padding=1)
    merged.weight.data.copy_(torch.cat([weight for weight, _ in parts]))
    merged.bias.data.copy_(torch.cat([bias for _, bias in parts]))
    return merged


class FusedDeformSSH(nn.Module):
    """FeatherFace V1's deformable SSH with BN folded into each deformable conv (as a bias), the
    offset / mask convs of deformable convs that share an input merged into one conv, the mask's
    factor 2 folded into the weights (kept as :func:`~featherface.models.dcn.projection`
    matrices), and each input padded once for all the convs that read it. Same outputs as the
    :class:`SSH` it replaces; :class:`FusedDeformContext` runs several levels' at once.
    """

    def __init__(self, ssh: nn.Module) -> None:
        super().__init__()
        convs: dict[str, DeformConv2d] = {name: getattr(ssh, name)[0] for name in _SSH_CONVS}
        if any(conv.bias is None for conv in convs.values()):
            raise ValueError("fold each SSH batch norm into its deformable conv before fusing the SSH")
        self.projections = nn.ParameterDict(
            {n: nn.Parameter(projection(2 * c.weight.detach()).contiguous()) for n, c in convs.items()}
        )
        self.biases = nn.ParameterDict({n: nn.Parameter(c.bias.detach().clone()) for n, c in convs.items()})
        self.offsets_x = _merged_offset_conv(convs["conv3x3"], convs["conv5x5_1"])
        self.offsets_s = _merged_offset_conv(convs["conv5x5_2"], convs["conv7x7_2"])
        self.offsets_t = _merged_offset_conv(convs["conv7x7_3"])
        self.negative_slope = ssh.conv5x5_1[-1].negative_slope
        self._grids = _GridCache()

    def deform(self, padded: torch.Tensor, plan: SamplingPlan, name: str) -> torch.Tensor:
        """Deformable conv ``name`` of a :func:`~featherface.models.dcn.pad_input` result."""
        return gather(project(padded, self.projections[name]), plan, self.biases[name])

    def activated(self, padded: torch.Tensor, plan: SamplingPlan, name: str) -> torch.Tensor:
        """:meth:`deform`, then the leaky ReLU of the 5×5 / 7×7 branches (padding kept zero)."""
        return mask_padding(F.leaky_relu(self.deform(padded, plan, name), self.negative_slope, inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _deform_ssh([self], [x], self._grids([x]))[0]


class _GridCache:
    """The :class:`SamplingGrid` of the last batch and sizes seen (a video, a fixed input size),
    rebuilt from the traced sizes when exporting."""

    def __init__(self) -> None:
        self._last: tuple[tuple, SamplingGrid] | None = None

    def __call__(self, features: list[torch.Tensor]) -> SamplingGrid:
        batch, device = features[0].shape[0], features[0].device
        sizes = [(x.shape[2], x.shape[3]) for x in features]
        if is_exporting():
            return SamplingGrid(batch, sizes, device)
        key = (batch, tuple(sizes), device)
        last = self._last  # one read: another thread may replace it meanwhile
        if last is None or last[0] != key:
            last = (key, SamplingGrid(batch, sizes, device))
            self._last = last
        return last[1]


def _deform_ssh(
    levels: list[FusedDeformSSH], features: list[torch.Tensor], grid: SamplingGrid
) -> list[torch.Tensor]:
    """Every level's SSH in lock-step: each stage's sampling plans for all levels in one go."""
    xs = [mask_padding(x) for x in features]
    plans3, plans5 = sampling_plans([level.offsets_x(x) for level, x in zip(levels, xs)], grid)
    padded = [pad_input(x) for x in xs]
    branch3 = [level.deform(p, plan, "conv3x3") for level, p, plan in zip(levels, padded, plans3)]
    shared = [level.activated(p, plan, "conv5x5_1") for level, p, plan in zip(levels, padded, plans5)]
    plans5, plans7 = sampling_plans([level.offsets_s(x) for level, x in zip(levels, shared)], grid)
    padded = [pad_input(x) for x in shared]
    branch5 = [level.deform(p, plan, "conv5x5_2") for level, p, plan in zip(levels, padded, plans5)]
    inner = [level.activated(p, plan, "conv7x7_2") for level, p, plan in zip(levels, padded, plans7)]
    (plans7,) = sampling_plans([level.offsets_t(x) for level, x in zip(levels, inner)], grid)
    branch7 = [level.deform(pad_input(x), plan, "conv7x7_3") for level, x, plan in zip(levels, inner, plans7)]
    return [F.relu(torch.cat(branches, dim=1), inplace=True) for branches in zip(branch3, branch5, branch7)]


class FusedDeformContext(nn.ModuleList):
    """The pyramid's :class:`FusedDeformSSH` levels run together: ``forward(features)`` maps the
    list of level features to the list of SSH outputs, each stage's sampling plans computed for
    all levels at once (a third of the small ops of running the levels one by one)."""

    def __init__(self, levels: list[FusedDeformSSH]) -> None:
        super().__init__(levels)
        self._grids = _GridCache()

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return _deform_ssh(list(self), features, self._grids(features))


def copy_pre_hooks(source: nn.Module, target: ModuleT) -> ModuleT:
    """Give ``target`` (a rewrite of ``source``) the forward pre-hooks of ``source``, such as the
    padded-batch input mask; returns ``target``."""
    for hook in source._forward_pre_hooks.values():
        target.register_forward_pre_hook(hook)
    return target


def dense_weight(conv: nn.Conv2d) -> torch.Tensor:
    """The weight of the ungrouped conv equal to ``conv``: ``(C_out, C_in, kh, kw)``, block-diagonal
    over the groups (zeros between them)."""
    per_group_in, per_group_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
    dense = conv.weight.new_zeros(conv.out_channels, conv.in_channels, *conv.kernel_size)
    for g in range(conv.groups):
        rows = slice(g * per_group_out, (g + 1) * per_group_out)
        dense[rows, g * per_group_in : (g + 1) * per_group_in] = conv.weight[rows]
    return dense


def _stacked_conv(convs: list[nn.Conv2d], block_diagonal: bool = False) -> nn.Conv2d:
    """One dense conv whose output channels are the ``convs``' outputs in order. The convs read the
    same input or, with ``block_diagonal``, consecutive channel slices of one input."""
    in_channels = sum(c.in_channels for c in convs) if block_diagonal else convs[0].in_channels
    stacked = nn.Conv2d(
        in_channels, sum(c.out_channels for c in convs), convs[0].kernel_size, padding=convs[0].padding
    )
    stacked.weight.data.zero_()
    row = column = 0
    for conv in convs:
        rows = slice(row, row + conv.out_channels)
        stacked.weight.data[rows, column : column + conv.in_channels] = dense_weight(conv)
        stacked.bias.data[rows] = conv.bias if conv.bias is not None else 0
        row += conv.out_channels
        column += conv.in_channels if block_diagonal else 0
    return stacked.to(convs[0].weight)


class FusedSSH(nn.Module):
    """FeatherFace V2's grouped SSH (BN folded) as four dense convs instead of seven grouped ones:
    the two 1×1 reductions as one conv, the 3×3 branch conv and the shared 5×5 / 7×7 conv as one
    block-diagonal conv, and the two convs reading that shared output as one. Same outputs as the
    :class:`SSH` it replaces.
    """

    def __init__(self, ssh: nn.Module) -> None:
        super().__init__()
        kinds = [[type(layer).__name__ for layer in getattr(ssh, name)] for name in _SSH_CONVS]
        expected = [["Conv2d", "ReLU", "Conv2d"]] * 2 + [["Conv2d"], ["Conv2d", "ReLU"], ["Conv2d"]]
        if kinds != expected:
            raise ValueError(f"expected a batch-norm-folded grouped SSH, got layers {kinds}")
        branch3, shared = ssh.conv3x3[2], ssh.conv5x5_1[2]
        self.split = (branch3.out_channels, shared.out_channels)
        self.reduce = _stacked_conv([ssh.conv3x3[0], ssh.conv5x5_1[0]])
        self.first = _stacked_conv([branch3, shared], block_diagonal=True)
        self.second = _stacked_conv([ssh.conv5x5_2[0], ssh.conv7x7_2[0]])
        self.third = _stacked_conv([ssh.conv7x7_3[0]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = mask_padding(F.relu(self.reduce(x), inplace=True))
        branch3, shared = self.first(reduced).split(self.split, dim=1)
        branch5, inner = self.second(mask_padding(shared)).split(self.split[1], dim=1)
        branch7 = self.third(mask_padding(F.relu(inner)))
        return F.relu(torch.cat((branch3, branch5, branch7), dim=1), inplace=True)


class PointwiseConv(nn.Module):
    """A 1×1 conv (stride 1, no groups) kept as its ``(C_out, C_in)`` matrix, run as one matrix
    product over the pixels of a small channels-last CPU map (at most :attr:`max_pixels` per
    image): eager PyTorch's fixed cost per oneDNN convolution outweighs the work there. Larger
    maps, other layouts and other devices run the convolution."""

    max_pixels = 4800

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().reshape(weight.shape[0], -1).clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> PointwiseConv:
        """The same conv (weights, bias and forward pre-hooks) as a :class:`PointwiseConv`."""
        return copy_pre_hooks(conv, cls(conv.weight, conv.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Both branches compute the same function, so a traced graph is right at any size.
        if (
            x.is_contiguous(memory_format=torch.channels_last)
            and x.device.type == "cpu"
            and x.shape[-2] * x.shape[-1] <= self.max_pixels
        ):
            rows = x.permute(0, 2, 3, 1)  # (B, H, W, C): a view of channels-last memory
            return F.linear(rows, self.weight, self.bias).permute(0, 3, 1, 2)
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, bias={self.bias is not None}"


def is_plain_pointwise(module: nn.Module) -> bool:
    """A plain ``nn.Conv2d`` that :class:`PointwiseConv` can replace."""
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.groups == 1
        and module.padding in ((0, 0), "valid")
        and module.padding_mode == "zeros"
    )


def _anchor_interleaved_conv(convs: tuple[nn.Conv2d, ...], values: tuple[int, ...]) -> nn.Conv2d:
    """One 1×1 conv for the ``convs`` (each ``A·k`` channels, anchor-major), its outputs reordered
    anchor by anchor: ``[anchor 0: box 4, class 2, landmarks 10, anchor 1: …]``."""
    anchors = convs[0].out_channels // values[0]
    weight = torch.cat([c.weight for c in convs])
    bias = torch.cat([c.bias for c in convs])
    starts = torch.tensor([0, *values[:-1]]).cumsum(0) * anchors
    order = torch.cat(
        [start + a * k + torch.arange(k) for a in range(anchors) for start, k in zip(starts.tolist(), values)]
    )
    merged = nn.Conv2d(convs[0].in_channels, weight.shape[0], 1)
    merged.weight.data.copy_(weight[order])
    merged.bias.data.copy_(bias[order])
    return merged


class MergedHeads(nn.Module):
    """Per level an optional trunk, then the box, class and landmark 1×1 convs as one conv whose
    channels go anchor by anchor, so one flatten per level and one concat give every output.

    Args:
        trunks: one module per level run before the outputs (``nn.Identity`` for V1).
        outputs: per level the ``(box, class, landmark)`` 1×1 convs that read the trunk.

    ``forward(features)`` returns ``(loc, conf, landms)`` exactly as the heads it replaces.
    """

    values = (4, 2, 10)

    def __init__(
        self, trunks: list[nn.Module], outputs: list[tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d]]
    ) -> None:
        super().__init__()
        self.trunks = nn.ModuleList(trunks)
        self.levels = nn.ModuleList(_anchor_interleaved_conv(convs, self.values) for convs in outputs)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        per_anchor = torch.cat(
            [
                flatten_level(conv(trunk(x)), sum(self.values))
                for trunk, conv, x in zip(self.trunks, self.levels, features)
            ],
            dim=1,
        )
        loc, conf, landms = per_anchor.split(self.values, dim=-1)
        return loc, conf, landms


def _block_diagonal_linear(layers: list[nn.Linear]) -> nn.Linear:
    """One linear layer equal to ``layers`` applied to consecutive slices of its input, outputs
    concatenated (block-diagonal weight, zeros between the blocks)."""
    if len({layer.bias is None for layer in layers}) != 1:
        raise ValueError("cannot merge linear layers of which only some have a bias")
    weight = torch.block_diag(*[layer.weight for layer in layers])
    merged = nn.Linear(weight.shape[1], weight.shape[0], bias=layers[0].bias is not None)
    merged.weight.data.copy_(weight)
    if merged.bias is not None:
        merged.bias.data.copy_(torch.cat([layer.bias for layer in layers]))
    return merged.to(layers[0].weight)


def _channel_max_and_mean_traced(x: torch.Tensor, channels: int) -> torch.Tensor:
    """:func:`~featherface.models.attention.channel_max_and_mean` as an exported graph records it:
    the mean as the product of a constant ``(1, C)`` row and ``(B, C, H·W)`` (ONNX Runtime
    reduces over a middle axis about three times slower than it multiplies),
    ``(B, C, H, W) → (B, 2, H, W)``; ``channels`` is ``C`` as a Python int (a constant)."""
    weights = torch.full((1, channels), 1.0 / channels, dtype=x.dtype, device=x.device)
    mean = torch.matmul(weights, x.flatten(2)).unflatten(2, x.shape[2:])
    return torch.cat((x.amax(dim=1, keepdim=True), mean), dim=1)


class FusedCBAM(nn.Module):
    """A pyramid's CBAMs (:class:`~featherface.models.attention.SharedCBAM` of V2 or
    :class:`~featherface.models.attention.PerLevelCBAM` of V1, spatial-gate BNs folded) with the
    levels batched: every level's channel-gate MLP as one block-diagonal MLP, and the spatial
    gates' 7×7 convs, stacked as the output channels of one conv (one for V2's shared gate, one
    per level for V1), run once over a canvas holding all levels' channel-max and -mean maps side
    by side, ``kernel // 2`` zero columns apart (exactly the conv's zero padding); level ``i``
    reads its own output channel. Same outputs; while exporting, the conv runs per level.
    """

    def __init__(self, cbam: SharedCBAM | PerLevelCBAM) -> None:
        super().__init__()
        if isinstance(cbam, SharedCBAM):
            gates, spatials = list(cbam.channel_gates), [cbam.spatial_gate]
        else:
            gates = [level.channel_gate for level in cbam.levels]
            spatials = [level.spatial_gate for level in cbam.levels]
        if not all(isinstance(spatial.bn, nn.Identity) for spatial in spatials):
            raise ValueError("fold each spatial gate's batch norm into its conv before fusing the CBAM")
        self.channels = [gate.fc1.in_features for gate in gates]
        self.fc1 = _block_diagonal_linear([gate.fc1 for gate in gates])
        self.fc2 = _block_diagonal_linear([gate.fc2 for gate in gates])
        self.spatial = _stacked_conv([spatial.conv for spatial in spatials])
        self.gap = self.spatial.padding[1]
        self.shared = len(spatials) == 1

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level ``relu(x + attention(x))`` (see :func:`~featherface.models.attention.attend`)."""
        pools = [global_pools(x) for x in features]
        pooled = torch.cat([mean for mean, _ in pools] + [peak for _, peak in pools], dim=1)
        logits = self.fc2(F.relu(self.fc1(pooled.unflatten(1, (2, -1))))).sum(dim=1)
        gates = torch.sigmoid(logits).split(self.channels, dim=1)
        attended = [x * gate[:, :, None, None] for x, gate in zip(features, gates)]
        spatial = self._spatial_gates(attended)
        return [gated_residual(x, a, s) for x, a, s in zip(features, attended, spatial)]

    def _gate_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The stacked spatial conv (no padding pre-hook: inputs arrive masked)."""
        conv = self.spatial
        return F.conv2d(x, conv.weight, conv.bias, padding=conv.padding)

    def _spatial_gates(self, attended: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each level's ``(B, 1, H, W)`` sigmoid gate from its channel max and mean."""
        outputs = [0 if self.shared else i for i in range(len(attended))]
        if is_exporting():
            return [
                torch.sigmoid(
                    self._gate_logits(mask_padding(_channel_max_and_mean_traced(a, channels)))[:, k : k + 1]
                )
                for a, k, channels in zip(attended, outputs, self.channels)
            ]
        batch, heights = attended[0].shape[0], [a.shape[2] for a in attended]
        widths = [a.shape[3] for a in attended]
        starts = [sum(widths[:i]) + i * self.gap for i in range(len(attended))]
        canvas = attended[0].new_zeros(batch, 2, max(heights), starts[-1] + widths[-1])
        masked = active_region() is not None
        for a, start in zip(attended, starts):
            region = canvas[:, :, : a.shape[2], start : start + a.shape[3]]
            if a.requires_grad:  # out= does not record gradients
                region.copy_(channel_max_and_mean(a))
            else:
                torch.amax(a, dim=1, keepdim=True, out=region[:, :1])
                torch.mean(a, dim=1, keepdim=True, out=region[:, 1:])
            if masked:  # what each spatial conv's padding pre-hook does to its level's input
                region.copy_(mask_padding(region))
        gate = torch.sigmoid(self._gate_logits(canvas))
        return [
            gate[:, k : k + 1, : a.shape[2], start : start + a.shape[3]]
            for a, k, start in zip(attended, outputs, starts)
        ]

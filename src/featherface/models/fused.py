"""Inference-only layers that :func:`featherface.models.fuse.fuse_model` swaps in: exact rewrites."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featherface.models.dcn import TAPS, SamplingGrid, SamplingPlan, gather, pad_input, project
from featherface.models.deform import DeformConv2d
from featherface.models.heads import flatten_level
from featherface.models.padding import mask_padding
from featherface.models.tracing import is_exporting

_OFFSETS = 2 * TAPS
_PLAN_CHANNELS = 3 * TAPS


def _merged_offset_conv(*convs: DeformConv2d) -> nn.Conv2d:
    """One 3×3 conv making ``[offsets_1, mask_logits_1, offsets_2, …]`` for convs sharing an input."""
    parts = [conv.offset_mask_conv() for conv in convs]
    merged = nn.Conv2d(convs[0].weight.shape[1], _PLAN_CHANNELS * len(convs), 3, padding=1)
    merged.weight.data.copy_(torch.cat([weight for weight, _ in parts]))
    merged.bias.data.copy_(torch.cat([bias for _, bias in parts]))
    return merged


def _plans(offset_logits: torch.Tensor, grid: SamplingGrid) -> list[SamplingPlan]:
    """One plan per 27 channels; the mask is ``sigmoid`` alone, its factor 2 lives in the weights."""
    plans = []
    for part in offset_logits.contiguous().split(_PLAN_CHANNELS, dim=1):
        offset, mask_logits = part.split((_OFFSETS, TAPS), dim=1)
        plans.append(SamplingPlan(offset, torch.sigmoid(mask_logits), grid))
    return plans


class FusedDeformSSH(nn.Module):
    """FeatherFace V1's deformable SSH with BN folded into each deformable conv (as a bias), the
    offset / mask convs of deformable convs that share an input merged into one conv, the mask's
    factor 2 folded into the weights, and each input padded once for all the convs that read it.
    Same outputs as the :class:`SSH` it replaces.
    """

    def __init__(self, ssh: nn.Module) -> None:
        super().__init__()
        names = ("conv3x3", "conv5x5_1", "conv5x5_2", "conv7x7_2", "conv7x7_3")
        convs: dict[str, DeformConv2d] = {name: getattr(ssh, name)[0] for name in names}
        if any(conv.bias is None for conv in convs.values()):
            raise ValueError("fold each SSH batch norm into its deformable conv before fusing the SSH")
        self.weights = nn.ParameterDict({n: nn.Parameter(2 * c.weight.detach()) for n, c in convs.items()})
        self.biases = nn.ParameterDict({n: nn.Parameter(c.bias.detach().clone()) for n, c in convs.items()})
        self.offsets_x = _merged_offset_conv(convs["conv3x3"], convs["conv5x5_1"])
        self.offsets_s = _merged_offset_conv(convs["conv5x5_2"], convs["conv7x7_2"])
        self.offsets_t = _merged_offset_conv(convs["conv7x7_3"])
        self.negative_slope = ssh.conv5x5_1[-1].negative_slope
        self._last_grid: tuple[tuple, SamplingGrid] | None = None

    def _grid(self, x: torch.Tensor) -> SamplingGrid:
        """The sampling constants for ``x``'s batch and size, kept for the next call of the same
        size (a video, a fixed input size); rebuilt from the traced sizes when exporting."""
        key = (x.shape[0], x.shape[2], x.shape[3], x.device)
        if is_exporting():
            return SamplingGrid(*key)
        last = self._last_grid  # one read: another thread may replace it meanwhile
        if last is None or last[0] != key:
            last = (key, SamplingGrid(*key))
            self._last_grid = last
        return last[1]

    def _deform(self, padded: torch.Tensor, plan: SamplingPlan, name: str) -> torch.Tensor:
        return gather(project(padded, self.weights[name]), plan, self.biases[name])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self._grid(x)
        x = mask_padding(x)
        plan3, plan5 = _plans(self.offsets_x(x), grid)
        padded = pad_input(x)
        branch3 = self._deform(padded, plan3, "conv3x3")
        shared = mask_padding(F.leaky_relu(self._deform(padded, plan5, "conv5x5_1"), self.negative_slope))
        plan5, plan7 = _plans(self.offsets_s(shared), grid)
        padded = pad_input(shared)
        branch5 = self._deform(padded, plan5, "conv5x5_2")
        inner = mask_padding(F.leaky_relu(self._deform(padded, plan7, "conv7x7_2"), self.negative_slope))
        (plan7,) = _plans(self.offsets_t(inner), grid)
        branch7 = self._deform(pad_input(inner), plan7, "conv7x7_3")
        return F.relu(torch.cat((branch3, branch5, branch7), dim=1))


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

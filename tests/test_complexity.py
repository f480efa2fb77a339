"""Parameter and MAC counting on hand-computable models and on both FeatherFace models."""

from __future__ import annotations

from torch import nn

from featherface import featherface_v1, featherface_v2
from featherface.complexity import count_macs, count_parameters
from featherface.models.deform import DeformConv2d, set_deform_impl


def test_macs_of_plain_layers():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Flatten()
    )
    assert count_macs(model, 10, 20) == 10 * 20 * 8 * 27 + 10 * 20 * 8 * 9
    linear = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    assert count_macs(linear, 6, 6) == 6 * 6 * 4 * 3 + 5 * 4


def test_deformable_conv_counts_kernel_offsets_and_mask_in_both_impls():
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 1)
            self.deform = DeformConv2d(16, 8)

        def forward(self, x):
            return self.deform(self.conv(x))

    expected = 12 * 10 * 16 * 3 + 12 * 10 * (8 + 18 + 9) * 16 * 9
    for impl in ("fast", "torchvision"):
        assert count_macs(set_deform_impl(Wrapper(), impl), 12, 10) == expected


def test_featherface_counts():
    v1, v2 = featherface_v1(), featherface_v2()
    assert count_parameters(v1) == 592_371
    assert count_macs(v1) == count_macs(set_deform_impl(featherface_v1(), "torchvision"))
    assert count_macs(v2) < count_macs(v1) / 2

"""Zero-channel stem widening: same outputs as the fused model on real photos, wider stem layers."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch

from featherface import featherface_v2
from featherface.models.fused import PointwiseConv
from featherface.models.widen import widen_stem
from tests.conftest import shared_path


def photo(name: str, size: tuple[int, int] | None = None) -> torch.Tensor:
    image = cv2.imread(str(shared_path("data", "dlib_faces", name)))
    if size is not None:
        image = cv2.resize(image, (size[1], size[0]))
    x = torch.from_numpy(image.astype(np.float32) - np.array([104, 117, 123], np.float32))
    return x.permute(2, 0, 1)[None].contiguous()


def stem_convs(model: torch.nn.Module) -> list[torch.nn.Module]:
    layers = [*model.body.stage1[0], *model.body.stage1[1]]
    return [layer for layer in layers if isinstance(layer, torch.nn.Conv2d | PointwiseConv)]


@pytest.mark.parametrize("channels_last", [True, False])
def test_widened_v2_stem_keeps_the_outputs_on_real_photos(channels_last):
    fused = featherface_v2(pretrained=True).fuse(channels_last=channels_last)
    wide = widen_stem(copy.deepcopy(fused), 16)
    first, depthwise, pointwise = stem_convs(wide)
    assert (first.out_channels, depthwise.in_channels, depthwise.groups) == (16, 16, 16)
    assert pointwise.weight.shape[1] == 16 and not pointwise.weight[:, 8:].any()
    assert [conv.weight.shape[0] for conv in stem_convs(fused)] == [8, 8, 16]  # the copy only
    for name, size in [("2008_002470.jpg", None), ("dogs.jpg", (333, 517))]:
        x = photo(name, size)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            expected, actual = fused(x), wide(x)
        assert max(float((e - a).abs().max()) for e, a in zip(expected, actual)) <= 1e-4


def test_widened_v1_stem_keeps_the_outputs(v1_model):
    fused = v1_model.fuse(channels_last=False)
    wide = widen_stem(copy.deepcopy(fused), 16)
    assert stem_convs(wide)[0].out_channels == 16
    x = photo("2008_002470.jpg", (240, 320))
    with torch.inference_mode():
        expected, actual = fused(x), wide(x)
    assert max(float((e - a).abs().max()) for e, a in zip(expected, actual)) <= 1e-4


def test_stem_widening_is_a_no_op_when_aligned_and_refuses_what_it_cannot_do():
    fused = featherface_v2(pretrained=True).fuse()
    before = stem_convs(fused)
    assert widen_stem(fused, 8) is fused and stem_convs(fused) == before  # 8 channels: aligned
    widen_stem(fused, 16)
    again = stem_convs(fused)
    assert widen_stem(fused, 16) is fused and stem_convs(fused) == again  # already widened
    with pytest.raises(ValueError, match=r"call model\.fuse"):
        widen_stem(featherface_v2(), 16)
    with pytest.raises(ValueError, match="positive channel count"):
        widen_stem(fused, 0)

"""The fast modulated deformable conv against torchvision's deform_conv2d: values, gradients, export."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch

from featherface.models import dcn
from featherface.models.deform import DeformConv2d, set_deform_impl
from tests.conftest import shared_path


def random_case(batch: int, channels: int, out_channels: int, height: int, width: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=gen) * 3
    # offsets up to ±6 px push many taps past the border and some entirely outside the image
    offset = torch.randn(batch, 18, height, width, generator=gen) * 3
    mask = 2 * torch.rand(batch, 9, height, width, generator=gen)
    weight = torch.randn(out_channels, channels, 3, 3, generator=gen) * 0.2
    bias = torch.randn(out_channels, generator=gen)
    return x, offset, mask, weight, bias


@pytest.mark.parametrize(
    "shape", [(1, 64, 32, 60, 80), (2, 16, 16, 15, 20), (3, 5, 7, 1, 1), (2, 4, 6, 2, 11), (1, 8, 3, 9, 1)]
)
def test_fast_matches_torchvision_on_random_offsets(shape):
    x, offset, mask, weight, bias = random_case(*shape)
    expected = dcn.deform_conv3x3(x, offset, mask, weight, bias, impl="torchvision")
    fast = dcn.deform_conv3x3(x, offset, mask, weight, bias, impl="fast")
    assert fast.shape == expected.shape
    assert float((fast - expected).abs().max()) <= 1e-4


def test_sampling_plan_rows_are_dense_pixel_major():
    """Per pixel 36 adjacent (index, weight) pairs in memory: a strided view would make every
    ``embedding_bag`` call copy it again."""
    _, offset, mask, _, _ = random_case(2, 4, 4, 6, 7)
    plan = dcn.sampling_plan(dcn.planar_offsets(offset), mask)
    for table in (plan.index, plan.weights):
        assert table.shape == (2 * 6 * 7, 36) and table.is_contiguous()
    # pixel 0's centre tap (k = 4) reads its four corners at offset (dy, dx) with bilinear weights
    dy, dx = float(offset[0, 8, 0, 0]), float(offset[0, 9, 0, 0])
    fy, fx = dy - np.floor(dy), dx - np.floor(dx)
    centre = plan.weights[0].view(4, 9)[:, 4]
    assert -1 < dy < 6 and -1 < dx < 7  # inside the image: no clamping
    corners = [(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx]
    expected = torch.tensor(corners, dtype=torch.float32) * mask[0, 4, 0, 0]
    torch.testing.assert_close(centre, expected, atol=1e-5, rtol=0)


def test_plans_of_several_convs_and_levels_at_once_equal_each_alone():
    """``sampling_plans``: two convs' plans over three levels of a batch of two in one pass."""
    sizes = [(6, 7), (3, 4), (1, 2)]
    gen = torch.Generator().manual_seed(5)
    logits = [torch.randn(2, 54, h, w, generator=gen) * 3 for h, w in sizes]
    logits[0] = logits[0].contiguous(memory_format=torch.channels_last)
    plans = dcn.sampling_plans(logits, dcn.SamplingGrid(2, sizes, torch.device("cpu")))
    assert len(plans) == 2 and all(len(per_conv) == 3 for per_conv in plans)
    for conv in range(2):
        for level, level_logits in enumerate(logits):
            part = level_logits[:, 27 * conv : 27 * (conv + 1)]
            alone = dcn.sampling_plan(part[:, :18], torch.sigmoid(part[:, 18:]))
            joint = plans[conv][level]
            assert joint.shape == alone.shape == (2, *sizes[level])
            assert joint.index.is_contiguous() and joint.weights.is_contiguous()
            assert torch.equal(joint.index, alone.index)
            torch.testing.assert_close(joint.weights, alone.weights, atol=1e-7, rtol=1e-6)  # sigmoid ulps


def test_taps_on_and_beyond_the_border_follow_torchvision_zero_padding():
    x = torch.ones(1, 1, 4, 5)
    weight = torch.zeros(1, 1, 3, 3)
    weight[0, 0, 1, 1] = 1.0  # only the centre tap counts: output (0, 0) reads x at (dy, dx)
    mask = torch.ones(1, 9, 4, 5)
    cases = {(-1.0, 0.0): 0.0, (-0.5, 0.0): 0.5, (3.0, 0.0): 1.0, (3.5, 0.0): 0.5, (4.0, 0.0): 0.0}
    cases |= {(-0.5, -0.5): 0.25, (0.0, 4.75): 0.25, (9.0, 9.0): 0.0, (-7.0, 2.0): 0.0}
    for (dy, dx), value in cases.items():
        offset = torch.zeros(1, 18, 4, 5)
        offset[:, 8], offset[:, 9] = dy, dx  # the centre tap's (dy, dx)
        fast = dcn.deform_conv3x3(x, offset, mask, weight)
        expected = dcn.deform_conv3x3(x, offset, mask, weight, impl="torchvision")
        torch.testing.assert_close(fast, expected, atol=1e-6, rtol=0)
        assert float(fast[0, 0, 0, 0]) == pytest.approx(value, abs=1e-6), (dy, dx)


def test_export_formulation_equals_the_eager_one(monkeypatch):
    x, offset, mask, weight, bias = random_case(2, 16, 8, 13, 17, seed=3)
    eager = dcn.deform_conv3x3(x, offset, mask, weight, bias)
    monkeypatch.setattr(dcn, "is_exporting", lambda: True)
    exported = dcn.deform_conv3x3(x, offset, mask, weight, bias)
    assert float((exported - eager).abs().max()) <= 1e-5


def test_fast_gradients_match_torchvision():
    inputs = [t.double().requires_grad_() for t in random_case(2, 6, 5, 7, 9, seed=1)]
    grads = {}
    for impl in ("fast", "torchvision"):
        out = dcn.deform_conv3x3(*inputs, impl=impl)
        loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()
        grads[impl] = torch.autograd.grad(loss, inputs)
    names = ("x", "offset", "mask", "weight", "bias")
    for name, fast, reference in zip(names, grads["fast"], grads["torchvision"]):
        assert float((fast - reference).abs().max()) <= 1e-8, name


def test_bad_shapes_and_impl_names_are_explained():
    x, offset, mask, weight, _ = random_case(1, 4, 2, 5, 5)
    with pytest.raises(ValueError, match=r"offset must be \(1, 18, 5, 5\)"):
        dcn.deform_conv3x3(x, offset[:, :9], mask, weight)
    with pytest.raises(ValueError, match=r"weight must be \(C_out, 4, 3, 3\)"):
        dcn.deform_conv3x3(x, offset, mask, weight[:, :3])
    with pytest.raises(ValueError, match="unknown deformable conv impl 'cuda'"):
        dcn.deform_conv3x3(x, offset, mask, weight, impl="cuda")
    with pytest.raises(ValueError, match="use one of"):
        set_deform_impl(torch.nn.Sequential(DeformConv2d(4, 2)), "slow")


def test_every_v1_deformable_conv_matches_torchvision_on_real_features(v1_model):
    """The 15 SSH deformable convs of V1, fed the features a real photo produces, both ways."""
    image = cv2.imread(str(shared_path("data", "dlib_faces", "2008_002470.jpg")))
    x = torch.from_numpy(image.astype(np.float32) - np.array([104, 117, 123], np.float32))
    inputs: dict[str, torch.Tensor] = {}
    model = copy.deepcopy(v1_model)
    handles = [
        module.register_forward_pre_hook(lambda m, args, name=name: inputs.__setitem__(name, args[0]))
        for name, module in model.named_modules()
        if isinstance(module, DeformConv2d)
    ]
    with torch.inference_mode():
        model(x.permute(2, 0, 1)[None])
    for handle in handles:
        handle.remove()
    assert len(inputs) == 15
    with torch.inference_mode():
        for name, features in inputs.items():
            conv = model.get_submodule(name)
            fast = conv(features)
            conv.impl = "torchvision"
            reference = conv(features)
            assert float((fast - reference).abs().max()) <= 1e-4, name

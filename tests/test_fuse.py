"""Inference-time fusion: fused V1 / V2 reproduce the unfused models and the golden outputs."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch

from featherface import featherface_v2
from featherface.models.attention import PerLevelCBAM, SharedCBAM
from featherface.models.bifpn import BiFPNCell
from featherface.models.context import ChannelShuffle
from featherface.models.fuse import (
    fold_batch_norm,
    fold_channel_shuffle,
    fuse_model,
    ungroup_conv,
    ungroup_convs,
)
from featherface.models.fused import (
    FusedCBAM,
    FusedDeformContext,
    FusedDeformSSH,
    FusedSSH,
    MergedHeads,
    PointwiseConv,
    is_plain_pointwise,
)
from featherface.models.padding import install_padding_hooks, valid_region
from featherface.priors import valid_prior_mask
from tests.conftest import shared_path

GOLDEN_SMALL = ["dlib_2008_002470", "wider_0_Parade_Parade_0_102"]


def load(meta: dict, name: str) -> torch.Tensor:
    image = cv2.imread(str(shared_path(meta[name]["source"])))
    x = torch.from_numpy(image.astype(np.float32) - np.array([104, 117, 123], np.float32))
    return x.permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def fused_v1(v1_model) -> torch.nn.Module:
    return v1_model.fuse()


def worst(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


@pytest.mark.parametrize("name", GOLDEN_SMALL)
def test_fused_v1_matches_unfused_and_golden(name, golden, v1_model, fused_v1):
    meta, arrays = golden
    x = load(meta, name)
    with torch.inference_mode():
        plain, fused = v1_model(x), fused_v1(x)
    assert worst(plain, fused) <= 1e-4
    loc, conf, landms = fused
    for key, value in (("loc", loc[0]), ("conf", conf[0].softmax(-1)), ("landms", landms[0])):
        assert float(np.abs(value.numpy() - arrays[f"{name}__{key}"]).max()) <= 1e-4, key


def test_fused_v1_structure_and_original_untouched(v1_model, fused_v1):
    assert isinstance(fused_v1.context, FusedDeformContext)
    assert all(isinstance(m, FusedDeformSSH) for m in fused_v1.context)
    assert isinstance(fused_v1.heads, MergedHeads)
    assert all(isinstance(m, FusedCBAM) for m in (fused_v1.body_attention, fused_v1.neck_attention))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused_v1.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in v1_model.modules()) > 0
    assert fused_v1.fused and not v1_model.fused
    assert all(
        cell.fixed_weights is not None for cell in fused_v1.neck.modules() if isinstance(cell, BiFPNCell)
    )
    assert all(cell.fixed_weights is None for cell in v1_model.neck.modules() if isinstance(cell, BiFPNCell))
    with pytest.raises(RuntimeError, match="fused for inference"):
        fused_v1.train()


def test_fused_context_runs_the_levels_together_as_each_would_alone(golden, fused_v1):
    """Lock-step SSH over the three levels (a batch of two) equals each level's SSH on its own."""
    meta, _ = golden
    images = torch.cat([load(meta, "dlib_2008_002470"), load(meta, "dlib_2008_002470").flip(-1)])
    with torch.inference_mode():
        features = fused_v1.forward_neck(images)
        together = fused_v1.context(features)
        alone = [level(x) for level, x in zip(fused_v1.context, features)]
    assert [t.shape for t in together] == [a.shape for a in alone]
    assert worst(tuple(together), tuple(alone)) <= 1e-5


def test_fused_v2_matches_unfused_on_a_real_image(golden):
    meta, _ = golden
    torch.manual_seed(0)
    model = featherface_v2().eval()
    for module in model.modules():  # non-trivial statistics so that folding matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    x = load(meta, "dlib_2008_002470")
    with torch.inference_mode():
        assert worst(model(x), fuse_model(model)(x)) <= 1e-4
        assert worst(model(x), fuse_model(model, channels_last=False)(x)) <= 1e-4


def test_fused_v2_runs_dense_ssh_convs_and_no_narrow_groups():
    fused = featherface_v2(pretrained=True).fuse()
    assert all(isinstance(level, FusedSSH) for level in fused.context)
    assert all(isinstance(m, FusedCBAM) for m in (fused.body_attention, fused.neck_attention))
    assert [len(list(level.children())) for level in fused.context] == [4, 4, 4]
    grouped = [m for m in fused.modules() if isinstance(m, torch.nn.Conv2d) and 1 < m.groups < m.in_channels]
    assert grouped and all(m.in_channels // m.groups > 4 for m in grouped)  # only the head trunks' 16
    with pytest.raises(ValueError, match="grouped SSH"):
        FusedSSH(featherface_v2().context[0])  # batch norms not folded yet


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning")
@pytest.mark.parametrize("kind", [SharedCBAM, PerLevelCBAM])
def test_fused_cbam_equals_the_levels_run_one_by_one(kind):
    """One block-diagonal MLP and one stacked spatial conv over a canvas of all levels: same
    outputs as the per-level CBAMs, in a padded batch too, and when traced (the per-level path)."""
    torch.manual_seed(0)
    cbam = kind((16, 32, 64), reduction=4).eval()
    install_padding_hooks(cbam)  # as FeatherFace does: each spatial conv masks its input
    for module in cbam.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight.data.normal_(0, 0.5)
        elif isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2)
    folded = copy.deepcopy(cbam)
    for module in folded.modules():
        if hasattr(module, "bn") and isinstance(module.bn, torch.nn.BatchNorm2d):
            fold_batch_norm(module.conv, module.bn)
            module.bn = torch.nn.Identity()
    fused = FusedCBAM(folded).requires_grad_(False)
    levels = [torch.randn(2, c, s, s + 3) for c, s in ((16, 23), (32, 12), (64, 6))]
    with torch.no_grad():
        expected, got = cbam(levels), fused(levels)
        with valid_region([(184, 208), (130, 97)], (184, 208)):
            expected_padded, got_padded = cbam(levels), fused(levels)
        traced = torch.jit.trace(lambda a, b, c: tuple(fused([a, b, c])), tuple(levels))
        got_traced = traced(*levels)
    for reference, outputs in ((expected, got), (expected_padded, got_padded), (expected, got_traced)):
        for x, y in zip(reference, outputs):
            torch.testing.assert_close(y, x, rtol=0, atol=1e-5)
    assert worst(tuple(expected), tuple(expected_padded)) > 1e-3  # the padding mask mattered
    fused.requires_grad_(True)  # outside no_grad / inference_mode: same values, gradients flow
    levels[0].requires_grad_(True)
    outputs = fused(levels)
    sum(out.sum() for out in outputs).backward()
    for x, y in zip(expected, outputs):
        torch.testing.assert_close(y.detach(), x, rtol=0, atol=1e-5)
    assert levels[0].grad is not None and fused.spatial.weight.grad is not None
    with pytest.raises(ValueError, match="fold each spatial gate's batch norm"):
        FusedCBAM(cbam)


@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_fused_padded_batch_equals_single_image_runs(arch, golden, v1_model):
    """Every rewritten layer (lock-step deformable SSH, dense V2 SSH, ungrouped convs) keeps the
    padded border of a smaller image out of its outputs."""
    meta, _ = golden
    model = (v1_model if arch == "v1" else featherface_v2(pretrained=True)).fuse()
    large = load(meta, "dlib_2008_002470")[..., :96, :128]
    small = load(meta, "dlib_tom_cruise")[..., :70, :101].contiguous()
    batch = torch.zeros(2, 3, 96, 128)
    batch[0], batch[1, :, :70, :101] = large[0], small[0]
    sizes = [(96, 128), (70, 101)]
    with torch.inference_mode():
        with valid_region(sizes, (96, 128)):
            padded = model(batch)
        alone = model(small)
    keep = valid_prior_mask(sizes, (96, 128))[1]
    for joint, single in zip(padded, alone):
        torch.testing.assert_close(joint[1][keep], single[0], atol=2e-5, rtol=0)


def test_pointwise_conv_equals_the_conv_it_replaces_on_every_path():
    """Matrix product on small channels-last maps, convolution otherwise; hooks kept."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(24, 40, 1)
    conv.register_forward_pre_hook(lambda module, args: (args[0].flip(-1),))
    pointwise = PointwiseConv.from_conv(conv).to(memory_format=torch.channels_last)
    small, large = torch.randn(2, 24, 30, 40), torch.randn(1, 24, 61, 80)  # 1,200 / 4,880 pixels
    with torch.no_grad():
        for x in (small, large):
            for layout in (torch.channels_last, torch.contiguous_format):
                x = x.contiguous(memory_format=layout)
                torch.testing.assert_close(pointwise(x), conv(x), rtol=0, atol=1e-5)
        assert pointwise(small.contiguous(memory_format=torch.channels_last)).is_contiguous(
            memory_format=torch.channels_last
        )
    assert not is_plain_pointwise(pointwise) and is_plain_pointwise(conv)
    assert not is_plain_pointwise(torch.nn.Conv2d(24, 40, 1, stride=2))


def test_fused_models_run_every_1x1_conv_as_pointwise(fused_v1):
    for model in (fused_v1, featherface_v2(pretrained=True).fuse()):
        modules = list(model.modules())
        assert any(isinstance(m, PointwiseConv) for m in modules)
        assert not any(is_plain_pointwise(m) for m in modules)


@pytest.mark.parametrize("groups", [1, 4])
def test_channel_shuffle_folds_into_a_following_pointwise_conv(groups):
    torch.manual_seed(0)
    shuffle, conv = ChannelShuffle(4), torch.nn.Conv2d(32, 16, 1, groups=groups)
    x = torch.randn(2, 32, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(fold_channel_shuffle(shuffle, conv)(x), conv(shuffle(x)))


@pytest.mark.parametrize(
    ("channels", "out", "groups", "kernel"), [(16, 32, 4, 1), (16, 16, 4, 3), (32, 16, 2, 3)]
)
def test_a_grouped_conv_and_its_ungrouped_equal_agree(channels, out, groups, kernel):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, out, kernel, padding=kernel // 2, groups=groups)
    x = torch.randn(2, channels, 7, 9)
    conv.register_forward_pre_hook(lambda module, args: (args[0].flip(-1),))  # e.g. a padding mask
    dense = ungroup_conv(conv)
    assert dense.groups == 1 and dense.weight.shape == (out, channels, kernel, kernel)
    with torch.no_grad():
        torch.testing.assert_close(dense(x), conv(x), rtol=0, atol=1e-6)
        assert not torch.allclose(
            dense(x), torch.nn.functional.conv2d(x, dense.weight, dense.bias, padding=kernel // 2)
        )


def test_ungrouped_v2_keeps_its_outputs_and_only_depthwise_groups(golden):
    meta, _ = golden
    fused = fuse_model(featherface_v2(pretrained=True).eval(), channels_last=False)
    grouped = [m for m in fused.modules() if isinstance(m, torch.nn.Conv2d) and 1 < m.groups < m.in_channels]
    assert grouped, "V2 has grouped convs (SSH and channel-shuffle convs) to ungroup"
    ungrouped = ungroup_convs(copy.deepcopy(fused))
    convs = [m for m in ungrouped.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.groups in (1, m.in_channels) for m in convs)
    x = load(meta, "dlib_2008_002470")
    with torch.inference_mode():
        assert worst(fused(x), ungrouped(x)) <= 1e-5


def test_fused_v1_sampling_grid_follows_the_input_size(golden, v1_model):
    """The fused SSH keeps the last size's sampling grid; a new size or batch must rebuild it."""
    meta, _ = golden
    fused = v1_model.fuse()
    image = load(meta, "dlib_2008_002470")
    inputs = [
        image[..., :97, :131],
        image[..., :64, :80],
        torch.cat([image[..., :64, :80]] * 2),
        image[..., :97, :131],
    ]
    with torch.inference_mode():
        for x in inputs:
            assert worst(fused(x), v1_model(x)) <= 1e-4

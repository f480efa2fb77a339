"""Architecture facts: parameter counts, output shapes and conventions for odd sizes and batches."""

from __future__ import annotations

import pytest
import torch

from featherface import create_model, featherface_v1, featherface_v2
from featherface.models import build_featherface_v1, build_featherface_v2
from featherface.models.bifpn import max_pool_same
from featherface.priors import num_priors


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_v1_has_exactly_the_published_parameter_count():
    model = build_featherface_v1()
    assert count(model) == 592_371
    assert count(model.body) == 213_072


def test_v2_is_within_three_percent_of_the_reference_student():
    assert abs(count(build_featherface_v2()) - 256_156) / 256_156 <= 0.03


def test_v2_has_no_deformable_convs():
    from featherface.models.deform import DeformConv2d

    assert not any(isinstance(m, DeformConv2d) for m in build_featherface_v2().modules())
    assert sum(isinstance(m, DeformConv2d) for m in build_featherface_v1().modules()) == 15


def test_registry_param_counts_match_the_built_models():
    for name, builder in (("featherface_v1", build_featherface_v1), ("featherface_v2", build_featherface_v2)):
        model = create_model(name)
        assert count(model) == count(builder())
        assert model.arch == name


@pytest.mark.parametrize("factory", [featherface_v1, featherface_v2], ids=["v1", "v2"])
@pytest.mark.parametrize("size", [(333, 517), (97, 131), (416, 416), (33, 1)])
def test_outputs_cover_every_prior_for_odd_sizes_and_batches(factory, size):
    torch.manual_seed(0)
    model = factory().eval()
    images = torch.randn(3, 3, *size) * 50
    with torch.no_grad():
        loc, conf, landms = model(images)
    priors = num_priors(*size)
    assert loc.shape == (3, priors, 4)
    assert conf.shape == (3, priors, 2)
    assert landms.shape == (3, priors, 10)
    assert torch.isfinite(loc).all() and torch.isfinite(conf).all() and torch.isfinite(landms).all()
    with torch.no_grad():
        single = model(images[1:2])
    for batched, alone in zip((loc, conf, landms), single):
        torch.testing.assert_close(batched[1:2], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("factory", [featherface_v1, featherface_v2], ids=["v1", "v2"])
def test_conf_is_logits_in_train_and_eval_mode(factory):
    torch.manual_seed(0)
    model = factory()
    images = torch.randn(2, 3, 64, 96) * 50
    model.train()
    train_out = model(images)
    model.eval()
    with torch.no_grad():
        eval_out = model(images)
    for a, b in zip(train_out, eval_out):
        assert a.shape == b.shape
    # logits, not probabilities: rows do not sum to one
    assert not torch.allclose(eval_out[1].sum(-1), torch.ones(2, eval_out[1].shape[1]))


def test_v1_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = featherface_v1().train()
    loc, conf, landms = model(torch.randn(2, 3, 64, 64))
    (loc.square().mean() + conf.square().mean() + landms.square().mean()).backward()
    untouched = [n for n, p in model.named_parameters() if p.grad is None]
    assert untouched == [], untouched


@pytest.mark.parametrize("channels_last", [False, True])
def test_same_max_pool_pads_with_zeros_like_tensorflow(channels_last):
    """BiFPN's "same" 3×3 / 2 pool: zero padding, the odd extra row / column at the end, values and
    gradients as pooling an explicitly zero-padded copy, for every parity of height and width."""
    for height, width in [(1, 1), (1, 6), (5, 2), (8, 9), (15, 20), (16, 16)]:
        x = torch.randn(2, 3, height, width, dtype=torch.float64) - 1  # zeros win at the borders
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        out_h, out_w = -(-height // 2), -(-width // 2)
        pad_h, pad_w = 2 * out_h + 1 - height, 2 * out_w + 1 - width
        padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        expected = torch.nn.functional.max_pool2d(torch.nn.functional.pad(x, padding), 3, 2)
        pooled = max_pool_same(x)
        assert pooled.shape == expected.shape == (2, 3, out_h, out_w)
        assert torch.equal(pooled, expected), (height, width)
        weights = torch.randn_like(expected)
        (grad,) = torch.autograd.grad((pooled * weights).sum(), x)
        (expected_grad,) = torch.autograd.grad((expected * weights).sum(), x)
        assert torch.equal(grad, expected_grad), (height, width)

"""Priors match the original implementation exactly and are cached."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featherface.boxes import decode_boxes, decode_landmarks, encode_boxes, encode_landmarks
from featherface.priors import num_priors, prior_boxes


def test_priors_equal_golden_for_every_image(golden):
    meta, arrays = golden
    for name, info in meta.items():
        priors = prior_boxes(info["height"], info["width"])
        assert priors.shape == (info["num_priors"], 4) == arrays[f"{name}__priors"].shape
        np.testing.assert_allclose(priors.numpy(), arrays[f"{name}__priors"], atol=1e-6, rtol=0)


def test_prior_layout_for_a_small_input():
    priors = prior_boxes(64, 32)
    assert priors.shape[0] == num_priors(64, 32) == 8 * 4 * 2 + 4 * 2 * 2 + 2 * 1 * 2
    # first prior: stride 8, row 0, col 0, min size 16
    torch.testing.assert_close(priors[0], torch.tensor([4 / 32, 4 / 64, 16 / 32, 16 / 64]))
    # second prior: same location, min size 32
    torch.testing.assert_close(priors[1], torch.tensor([4 / 32, 4 / 64, 32 / 32, 32 / 64]))
    # third prior: next column
    torch.testing.assert_close(priors[2, :2], torch.tensor([12 / 32, 4 / 64]))


def test_priors_are_cached_per_size_and_device():
    assert prior_boxes(120, 160) is prior_boxes(120, 160)
    assert prior_boxes(120, 160) is not prior_boxes(160, 120)
    assert prior_boxes(120, 160, device="cpu").device.type == "cpu"


@pytest.mark.parametrize("size", [(0, 10), (10, -1)])
def test_priors_reject_empty_sizes(size):
    with pytest.raises(ValueError, match="positive image size"):
        prior_boxes(*size)


def test_box_and_landmark_encoding_round_trips():
    torch.manual_seed(0)
    priors = prior_boxes(96, 128)
    loc = torch.randn(priors.shape[0], 4)
    landms = torch.randn(priors.shape[0], 10)
    boxes = decode_boxes(loc, priors)
    torch.testing.assert_close(encode_boxes(boxes, priors), loc, atol=1e-4, rtol=1e-4)
    points = decode_landmarks(landms, priors)
    torch.testing.assert_close(encode_landmarks(points, priors), landms, atol=1e-4, rtol=1e-4)


def test_decoding_a_zero_regression_returns_the_prior():
    priors = prior_boxes(64, 64)[:4]
    boxes = decode_boxes(torch.zeros(4, 4), priors)
    torch.testing.assert_close((boxes[:, :2] + boxes[:, 2:]) / 2, priors[:, :2])
    torch.testing.assert_close(boxes[:, 2:] - boxes[:, :2], priors[:, 2:])
    points = decode_landmarks(torch.zeros(4, 10), priors).reshape(4, 5, 2)
    torch.testing.assert_close(points, priors[:, None, :2].expand(4, 5, 2))

"""Golden parity: FeatherFace V1 reproduces the original implementation's raw outputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import shared_path

GOLDEN_NAMES = [
    "dlib_2008_002470",
    "dlib_2009_004587",
    "dlib_bald_guys",
    "dlib_tom_cruise",
    "dlib_dogs",
    "wider_0_Parade_Parade_0_102",
    "wider_2_Demonstration",
]


def test_golden_file_lists_the_expected_images(golden):
    meta, _ = golden
    assert sorted(meta) == sorted(GOLDEN_NAMES)


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_v1_raw_outputs_match_golden(name, golden, v1_model):
    meta, arrays = golden
    image = cv2.imread(str(shared_path(meta[name]["source"])))
    assert image.shape[:2] == (meta[name]["height"], meta[name]["width"])
    x = torch.from_numpy(image.astype(np.float32) - np.array([104, 117, 123], np.float32))
    with torch.inference_mode():
        loc, conf, landms = v1_model(x.permute(2, 0, 1)[None])
    outputs = {"loc": loc[0], "conf": conf[0].softmax(-1), "landms": landms[0]}
    for key, value in outputs.items():
        expected = arrays[f"{name}__{key}"]
        assert value.shape == expected.shape
        worst = float(np.abs(value.numpy() - expected).max())
        assert worst <= 1e-4, f"{name} {key}: max abs difference {worst}"

"""Detector → WIDER prediction files, and ``featherface eval widerface --model`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featherface.cli import main
from featherface.eval import evaluate_widerface, read_widerface_predictions
from featherface.eval.predict import WIDERFACE_DETECTOR_SETTINGS, predict_widerface, xyxy_to_widerface
from tests.conftest import link_subset200_images, shared_path

# The reference evaluator's numbers for the original V1 pipeline on subset200 (issue 4).
REFERENCE_AP = {"easy": 0.742775, "medium": 0.629156, "hard": 0.334755}


@pytest.fixture(scope="module")
def detector(v1_checkpoint):
    from featherface.detector import FaceDetector

    return FaceDetector(
        "featherface_v1", checkpoint_path=v1_checkpoint, device="cpu", **WIDERFACE_DETECTOR_SETTINGS
    )


@pytest.fixture
def two_images(tmp_path):
    return link_subset200_images(tmp_path, 2)


def test_xyxy_to_widerface_counts_pixels_inclusively():
    rows = xyxy_to_widerface(np.array([[10.0, 20.0, 19.0, 39.5]]), np.array([0.75]))
    np.testing.assert_array_equal(rows, [[10.0, 20.0, 10.0, 20.5, 0.75]])
    assert xyxy_to_widerface(np.zeros((0, 4)), np.zeros(0)).shape == (0, 5)


def test_predictions_match_the_original_pipeline(detector, two_images, tmp_path):
    golden = read_widerface_predictions(shared_path("golden", "wider_subset200_v1_predictions"))
    written = predict_widerface(detector, two_images, tmp_path / "pred")
    back = read_widerface_predictions(tmp_path / "pred")
    assert (
        sorted(back)
        == sorted(written)
        == ["0--Parade/0_Parade_Parade_0_102", "0--Parade/0_Parade_Parade_0_125"]
    )
    for key, rows in back.items():
        reference = golden[key]
        assert rows.shape == reference.shape
        np.testing.assert_allclose(rows[:, 4], reference[:, 4], atol=1e-5)
        # The original script writes int(x1), int(y1), int(x2 - x1 + 1), int(y2 - y1 + 1); rows whose
        # scores tie to 1e-6 may come in another order, so compare almost all rows, not all.
        assert np.mean((np.trunc(rows[:, :4]) == reference[:, :4]).all(axis=1)) > 0.98


def test_predict_refuses_a_folder_with_predictions(detector, two_images, tmp_path):
    stale = tmp_path / "pred" / "0--Parade" / "old.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("old\n0\n")
    with pytest.raises(ValueError, match="already holds prediction files"):
        predict_widerface(detector, two_images, tmp_path / "pred")


def test_image_folder_errors(detector, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predict_widerface(detector, tmp_path / "nowhere", tmp_path / "pred")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"<event>/<image>\.jpg"):
        predict_widerface(detector, tmp_path / "flat", tmp_path / "pred")


def test_cli_runs_the_detector_then_scores(v1_checkpoint, tmp_path, capsys):
    gt = shared_path("data", "wider_val_subset200", "gt")
    one_image = link_subset200_images(tmp_path, 1)
    out = tmp_path / "out"
    args = ["eval", "widerface", "--model", "featherface_v1", "--checkpoint", str(v1_checkpoint)]
    args += ["--images", str(one_image), "--gt", str(gt), "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "199 of 200 ground-truth images have no predictions" in captured.err
    assert len(list((out / "predictions" / "0--Parade").glob("*.txt"))) == 1
    report = json.loads((out / "results.json").read_text())
    assert report["model"] == "featherface_v1" and report["num_missing"] == 199
    with pytest.warns(UserWarning, match="199 of 200"):
        expected = evaluate_widerface(out / "predictions", gt)
    assert report["hard"] == pytest.approx(expected["hard"]) and report["hard"] > 0
    assert main(args) == 2
    assert "already holds prediction files" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--predictions", "p", "--images", "i"], "--images only apply with --model"),
        (["--model", "featherface_v1"], "--model needs --images"),
    ],
)
def test_cli_option_errors(extra, message, tmp_path, capsys):
    assert main(["eval", "widerface", *extra, "--gt", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_end_to_end_on_subset200_matches_the_reference(v1_checkpoint, tmp_path):
    images = shared_path("data", "wider_val_subset200", "images")
    args = ["eval", "widerface", "--model", "featherface_v1", "--checkpoint", str(v1_checkpoint)]
    args += ["--images", str(images), "--gt", str(shared_path("data", "wider_val_subset200", "gt"))]
    assert main([*args, "--out", str(tmp_path), "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    for setting, expected in REFERENCE_AP.items():
        assert report[setting] == pytest.approx(expected, abs=0.01)

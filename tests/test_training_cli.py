"""``featherface train`` and ``featherface distill`` on real data."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import time

import pytest
import torch

from featherface import create_model
from featherface.cli import build_parser, main
from featherface.cli.training_options import build_loader
from featherface.models import registry
from featherface.models.registry import get_model_cfg
from featherface.training.logs import read_log

from .conftest import REPO, shared_path


def _four_image_labels(tmp_path):
    """The first four entries of widerface_train1000's label.txt, as a label file of their own."""
    lines = shared_path("data", "widerface_train1000", "label.txt").read_text().splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("#")]
    label = tmp_path / "label.txt"
    label.write_text("\n".join(lines[: headers[4]]) + "\n")
    return label


def test_train_then_resume_for_more_epochs(tmp_path, capsys):
    label = _four_image_labels(tmp_path)
    images = shared_path("data", "widerface_train1000", "images")
    out = tmp_path / "run"
    args = ["train", "--model", "featherface_v2", "--labels", str(label), "--images", str(images)]
    args += [
        "--image-size",
        "96",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--output",
        str(out),
        "--no-progress",
        "--whole-image",
        "0.5",
        "--face-balance",
        "0.5",
    ]
    assert main([*args, "--epochs", "1", "--whole-image", "1.5"]) == 2
    assert "whole_image is a probability in [0, 1], got 1.5" in capsys.readouterr().err
    assert main([*args, "--epochs", "1", "--blank", "0.1"]) == 2
    assert "--blank needs a teacher" in capsys.readouterr().err
    assert main([*args, "--epochs", "1", "--face-balance", "2"]) == 2
    assert "face_balance must lie in [0, 1], got 2.0" in capsys.readouterr().err
    assert main([*args, "--epochs", "1"]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    epochs = [r for r in read_log(out / "log.jsonl") if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and epochs[-1]["step"] == 4
    create_model("featherface_v2", checkpoint_path=out)


@pytest.fixture
def unweighted_arch(monkeypatch):
    """A copy of featherface_v2 registered under a new name with no published weights."""
    cfg = dataclasses.replace(
        get_model_cfg("featherface_v2"), arch="v2_no_weights", weights={}, default_tag=None
    )
    monkeypatch.setitem(registry._REGISTRY, cfg.arch, cfg)
    return cfg.arch


def test_cli_errors_say_what_to_do(tmp_path, capsys, unweighted_arch):
    images = str(shared_path("data", "dlib_faces"))
    common = ["--images", images, "--epochs", "1", "--workers", "0", "--output", str(tmp_path)]
    assert main(["train", "--model", "featherface_v2", *common]) == 2
    assert "train needs --labels" in capsys.readouterr().err
    assert main(["distill", "--teacher", unweighted_arch, "--student", "featherface_v2", *common]) == 2
    assert "has no pretrained weights: pass --teacher-checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--model", "featherface_v2", *common, "--loss-weight", "box=1"])
    assert "NAME one of loc, cls, landm" in capsys.readouterr().err


def test_augmentation_options_reach_the_training_transform(tmp_path):
    images = str(shared_path("data", "dlib_faces"))
    command = ["distill", "--teacher", "featherface_v1", "--student", "featherface_v2", "--images", images]
    command += ["--epochs", "1", "--workers", "0", "--output", str(tmp_path), "--image-size", "96"]
    args = build_parser().parse_args([*command, "--blank", "1", "--whole-image", "0.25"])
    dataset = build_loader(args).dataset
    assert (dataset.transform.blank, dataset.transform.whole_image) == (1.0, 0.25)
    assert dataset.transform.crop_scales == (0.3, 0.45, 0.6, 0.8, 1.0)
    sample = dataset[0]
    assert sample.image.shape == (96, 96, 3) and len(sample.boxes) == 0 and sample.labeled
    args = build_parser().parse_args([*command, "--crop-scales", "0.3,1,2"])
    assert build_loader(args).dataset.transform.crop_scales == (0.3, 1.0, 2.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [("0.3,big", "expected comma-separated numbers"), ("0.3,5", r"in \(0, 4\], got '0.3,5'")],
)
def test_crop_scales_option_names_the_bad_value(value, message, capsys):
    command = ["train", "--model", "featherface_v2", "--images", ".", "--epochs", "1", "--output", "x"]
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--crop-scales", value])
    assert re.search(message, capsys.readouterr().err)


def test_distill_v1_into_v2_on_unlabelled_photos(tmp_path, v1_checkpoint):
    """The acceptance run: 4 epochs on the 12 dlib photos at 320 px, the teacher labelling them."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "featherface", "distill", "--teacher", "featherface_v1"]
    command += ["--teacher-checkpoint", str(v1_checkpoint), "--student", "featherface_v2"]
    command += ["--images", str(shared_path("data", "dlib_faces")), "--epochs", "4", "--image-size", "320"]
    command += ["--batch-size", "4", "--output", str(out)]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"distill end to end: {seconds:.1f} s")
    epochs = [r for r in read_log(out / "log.jsonl") if r["kind"] == "epoch"]
    assert [r["step"] for r in epochs] == [3, 6, 9, 12]
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    assert all(r["kd_cls"] > 0 and r["loc"] > 0 for r in epochs)
    student = create_model("featherface_v2", checkpoint_path=out)
    loc, conf, _ = student(torch.zeros(1, 3, 320, 320))
    assert loc.shape == (1, 4200, 4) and torch.isfinite(conf).all()

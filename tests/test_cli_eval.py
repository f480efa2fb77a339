"""``featherface eval widerface`` and the PR-curve plots."""

from __future__ import annotations

import json
import sys

import pytest

from featherface.cli import main
from featherface.eval import evaluate_widerface
from featherface.eval.plot import save_pr_curves
from tests.conftest import shared_path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def paths():
    predictions = shared_path("golden", "wider_subset200_v1_predictions")
    return predictions, shared_path("data", "wider_val_subset200", "gt")


def eval_args(predictions, gt, out) -> list[str]:
    return ["eval", "widerface", "--predictions", str(predictions), "--gt", str(gt), "--out", str(out)]


def test_scores_prediction_files(paths, tmp_path, capsys):
    predictions, gt = paths
    assert main(eval_args(predictions, gt, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "easy      0.7428     548" in out and "hard      0.3348    3477" in out
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["medium"] == pytest.approx(0.629156, abs=1e-4)
    assert len(report["pr_curves"]["easy"]["precision"]) == 1000
    assert report["gt"] == str(gt)


def test_plots_or_says_how_to_get_them(paths, tmp_path, capsys, monkeypatch):
    predictions, gt = paths
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(eval_args(predictions, gt, tmp_path)) == 0
    assert "featherface[plot]" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.png"))


def test_pr_curve_pngs(paths, tmp_path):
    pytest.importorskip("matplotlib")
    result = evaluate_widerface(*paths)
    written = save_pr_curves(result, tmp_path)
    assert [p.name for p in written] == ["pr_easy.png", "pr_medium.png", "pr_hard.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in written)


def test_errors_are_reported_without_a_traceback(paths, tmp_path, capsys):
    predictions, _ = paths
    assert main(eval_args(predictions, tmp_path, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "featherface eval: error: gt_dir" in err and "wider_face_val.mat" in err and "Traceback" not in err


def test_missing_images_are_warned_about(paths, tmp_path, capsys):
    predictions, gt = paths
    partial = tmp_path / "partial"
    files = [file for event in sorted(predictions.iterdir())[:2] for file in event.iterdir()]
    for file in files:
        (partial / file.parent.name).mkdir(parents=True, exist_ok=True)
        (partial / file.parent.name / file.name).write_text(file.read_text())
    assert main(eval_args(partial, gt, tmp_path / "out")) == 0
    missing = 200 - len(files)
    assert f"featherface eval: warning: {missing} of 200 ground-truth images" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "results.json").read_text())["num_missing"] == missing

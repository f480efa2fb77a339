"""The scripts in recipes/ on real data."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from featherface import FaceDetector, create_model, featherface_v2
from featherface.priors import prior_boxes
from featherface.training import LabeledFaceDataset, TrainAugment, make_loader, train
from featherface.training.data import Target
from featherface.training.labels import read_retinaface_labels
from featherface.training.matching import encode_targets
from featherface.weights import resolve_pretrained
from tests.conftest import REPO, link_subset200_images, shared_path


def test_training_curve_of_two_consecutive_runs(tmp_path):
    labels = read_retinaface_labels(shared_path("data", "widerface_train1000", "label.txt"))[:4]
    loader = make_loader(LabeledFaceDataset(labels, TrainAugment(128)), 2)
    model = featherface_v2()
    first, second = tmp_path / "stage1", tmp_path / "stage2"
    train(model, loader, epochs=2, save_every=1, output_dir=first, progress=False)
    train(model, loader, epochs=1, output_dir=second, progress=False)
    images = link_subset200_images(tmp_path, 3)
    command = [sys.executable, str(REPO / "recipes" / "training_curve.py"), str(first), str(second)]
    command += ["--model", "featherface_v2", "--images", str(images), "--device", "cpu"]
    gt = shared_path("data", "wider_val_subset200", "gt")
    command += ["--gt", str(gt), "--out", str(tmp_path / "curve")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "curve" / "curve.json").read_text())
    assert [(r["epoch"], r["run"]) for r in rows] == [(1, str(first)), (2, str(first)), (3, str(second))]
    for row in rows:  # epoch 1 from epochs/, epoch 2 from stage 1's export, epoch 3 from stage 2's
        assert row["loss"] > 0 and all(0.0 <= row[s] <= 1.0 for s in ("easy", "medium", "hard"))
    assert (tmp_path / "curve" / "curve.png").stat().st_size > 0
    assert "   3  loss" in result.stdout

    # --reuse takes every AP over from the first curve: with the weights gone, nothing is evaluated
    exports = [first / "model.safetensors", second / "model.safetensors"]
    for weights in [*first.glob("epochs/*.safetensors"), *exports]:
        weights.unlink()
    reused_out = tmp_path / "curve_reused"
    command[command.index(str(tmp_path / "curve"))] = str(reused_out)
    command += ["--reuse", str(tmp_path / "curve" / "curve.json")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((reused_out / "curve.json").read_text()) == rows


def test_face_sizes_counts_original_and_augmented_faces(tmp_path):
    label_file = shared_path("data", "widerface_train1000", "label.txt")
    images = shared_path("data", "widerface_train1000", "images")
    command = [sys.executable, str(REPO / "recipes" / "face_sizes.py"), "--labels", str(label_file)]
    command += ["--images", str(images), "--every", "80", "--repeats", "2", "--whole-image", "0", "1"]
    command += ["--json", str(tmp_path / "sizes.json"), "--model", "featherface_v2", "--score", "0.2", "0.5"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "sizes.json").read_text())
    rows, recall = report["faces"], report["recall"]["featherface_v2"]
    stray = report["stray_per_image"]["featherface_v2"]
    assert list(rows) == ["original", "whole_image=0", "whole_image=1"]
    assert "| whole_image=1 |" in result.stdout and "| featherface_v2 |" in result.stdout
    # bins without faces have no recall; a higher score threshold never finds more faces; faces of
    # 32–64 px are mostly found, those under 8 px mostly not
    occupied = [share > 0 for share in rows["original"]["shares"]]
    assert [r is not None for r in recall["score>=0.2"]] == occupied
    pairs = [(a, b) for a, b in zip(recall["score>=0.2"], recall["score>=0.5"]) if a is not None]
    assert all(0.0 <= b <= a <= 1.0 for a, b in pairs)
    assert recall["score>=0.5"][6] > 0.5 and recall["score>=0.2"][1] < 0.5
    assert 0.0 <= stray["score>=0.5"] <= stray["score>=0.2"] and "stray detections / image" in result.stdout
    assert 0.0 < report["ap"]["featherface_v2"] < 1.0 and "every labelled face" in result.stdout

    # the original row from the label file itself: sides sqrt(w·h), bins [0, 4, 8, 12, 16, 24, 32, 64, ∞)
    labels = read_retinaface_labels(label_file)[::80]
    edges = [0, 4, 8, 12, 16, 24, 32, 64, float("inf")]

    def shares(sides):
        counts = [sum(lo <= s < hi for s in sides) for lo, hi in pairwise(edges)]
        return [round(c / sum(counts), 4) for c in counts]

    sides = [float((w * h) ** 0.5) for e in labels for w, h in e.boxes[:, 2:] - e.boxes[:, :2]]
    assert rows["original"]["faces"] == len(sides)
    assert rows["original"]["shares"] == shares(sides)
    # whole images keep every face, shrunk by 640 / the long side; crops keep fewer and enlarge them
    scales = [640 / max(cv2.imread(str(e.path)).shape[:2]) for e in labels]
    shrunk = [
        float((w * h) ** 0.5) * scale
        for e, scale in zip(labels, scales)
        for w, h in e.boxes[:, 2:] - e.boxes[:, :2]
    ]
    assert rows["whole_image=1"]["faces_per_image"] == rows["original"]["faces_per_image"]
    assert np.allclose(rows["whole_image=1"]["shares"], shares(shrunk), atol=0.01)
    assert sum(rows["whole_image=1"]["shares"][:3]) > sum(rows["original"]["shares"][:3])
    assert rows["whole_image=0"]["faces_per_image"] < rows["original"]["faces_per_image"]
    assert sum(rows["whole_image=0"]["shares"][:2]) < sum(rows["whole_image=1"]["shares"][:2])
    # loss weight by face size: faces under 4 px match no prior; face balance moves weight from
    # the largest faces to the 8–12 px ones
    assert "face_balance=0.5" in result.stdout
    for row in ("whole_image=0", "whole_image=1"):
        weights = rows[row]["loss_weight"]
        assert list(weights) == ["0", "0.5", "1"]
        assert all(
            sum(shares) == pytest.approx(1.0, abs=1e-3) and shares[0] == 0 for shares in weights.values()
        )
        assert weights["0"][-1] > weights["0.5"][-1] > weights["1"][-1]
        assert weights["0"][2] < weights["0.5"][2] < weights["1"][2]


def _face_sizes_recipe() -> ModuleType:
    """``recipes/face_sizes.py`` imported as a module."""
    sys.path.insert(0, str(REPO / "recipes"))
    try:
        return importlib.import_module("face_sizes")
    finally:
        sys.path.pop(0)


def test_face_sizes_loss_weights_agree_with_the_training_face_shares():
    recipe = _face_sizes_recipe()
    boxes = np.array([[100, 100, 110, 110], [300, 200, 400, 300], [500, 500, 502, 502]], np.float32)
    priors = prior_boxes(640, 640)
    counts = recipe.priors_per_face(boxes, priors, 640)
    target = Target(torch.from_numpy(boxes), torch.zeros(3, 5, 2), torch.zeros(3, dtype=torch.bool))
    share = encode_targets([target], priors, (640, 640)).face_share[0]
    # each matched face's priors hold 1 / (its prior count) each; the 2-px face matches nothing
    assert counts[2] == 0 and counts[0] >= 1 and counts[1] > counts[0]
    assert sorted(share[share > 0].unique().tolist()) == pytest.approx(sorted({1 / counts[0], 1 / counts[1]}))
    assert (share > 0).sum().item() == counts.sum()
    sides = recipe.face_sides(boxes)  # 10 px (bin 8–12), 100 px (≥ 64), 2 px (0–4)
    assert recipe.loss_weight_shares(sides, counts, 1.0) == [0, 0, 0.5, 0, 0, 0, 0, 0.5]
    by_priors = recipe.loss_weight_shares(sides, counts, 0.0)
    total = counts[0] + counts[1]
    assert by_priors[2] == round(counts[0] / total, 4) and by_priors[7] == round(counts[1] / total, 4)


def test_found_faces_matches_each_detection_to_the_best_unmatched_face():
    found_faces = _face_sizes_recipe().found_faces
    truth = np.array([[0, 0, 10, 10], [100, 100, 120, 120], [8, 0, 18, 10]], np.float32)
    # the first detection overlaps face 0 best (IoU 1); the second also overlaps face 0 most (IoU 0.82)
    # but it is taken, so it gets face 2 (IoU 0.18 < 0.5: not found); face 1 is nowhere near a detection
    detections = np.array([[0, 0, 10, 10], [1, 0, 11, 10]], np.float32)
    assert found_faces(detections, truth).tolist() == [True, False, False]
    assert found_faces(detections[1:], truth).tolist() == [True, False, False]
    assert found_faces(detections[:0], truth).tolist() == [False, False, False]


def test_stray_detections_overlap_no_face():
    stray_detections = _face_sizes_recipe().stray_detections
    truth = np.array([[0, 0, 10, 10], [100, 100, 120, 120]], np.float32)
    # overlapping a face a little is not stray; touching its edge (zero area) or lying apart is
    detections = np.array([[9, 9, 30, 30], [10, 0, 20, 10], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    assert stray_detections(detections, truth).tolist() == [False, True, True, False]
    assert stray_detections(detections, truth[:0]).tolist() == [True] * 4
    assert stray_detections(detections[:0], truth).tolist() == []


def test_labelled_face_ap_ranks_a_stray_detection_among_the_faces():
    recipe = _face_sizes_recipe()
    faces = [np.array([[0, 0, 20, 20], [40, 0, 60, 20]], np.float32), np.zeros((0, 4), np.float32)]
    entries = [
        recipe.ImageLabels(
            Path(f"event/img{i}.jpg"), boxes, np.zeros((len(boxes), 5, 2)), np.zeros(len(boxes), bool)
        )
        for i, boxes in enumerate(faces)
    ]
    found = np.array([[0, 0, 19, 19, 0.8], [40, 0, 59, 19, 0.7]])
    assert recipe.labelled_face_ap([found, np.zeros((0, 5))], entries) == 1.0
    # a stray scored above both faces: precision 1/2 at recall 1/2, 2/3 at recall 1; the
    # interpolated curve is 2/3 throughout
    stray = np.array([[100, 100, 119, 119, 0.9]])
    assert recipe.labelled_face_ap([np.concatenate([stray, found]), np.zeros((0, 5))], entries) == 0.6667
    # on an image without faces it costs nothing (the protocol skips images without faces)
    assert recipe.labelled_face_ap([found, stray], entries) == 1.0
    assert recipe.labelled_face_ap([found[:1], np.zeros((0, 5))], entries) == 0.5


def test_average_weights_of_two_runs_loads_and_detects(tmp_path):
    """The uniform average of the shipped V2 weights and a copy moved by 2·delta is the shipped
    weights moved by delta, keeps the architecture metadata and loads as a model."""
    shipped = resolve_pretrained("featherface_v2.widerface_kd")
    weights = load_file(str(shipped))
    generator = torch.Generator().manual_seed(0)
    deltas = {  # 0.1% of each value: batch-norm variances stay positive
        key: 1e-3 * value * torch.randn(value.shape, generator=generator)
        for key, value in weights.items()
        if value.is_floating_point()
    }
    moved = {k: v + 2 * deltas[k] if k in deltas else v + 7 for k, v in weights.items()}
    metadata = {"featherface": json.dumps({"arch": "featherface_v2"})}
    save_file(moved, str(tmp_path / "moved.safetensors"), metadata=metadata)
    out = tmp_path / "soup" / "model.safetensors"
    command = [sys.executable, str(REPO / "recipes" / "average_weights.py"), str(out), str(shipped)]
    result = subprocess.run([*command, str(tmp_path / "moved.safetensors")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    averaged = load_file(str(out))
    for key, value in weights.items():
        # floats: the mean; integer counters (num_batches_tracked): the first input's
        expected = value + deltas[key] if key in deltas else value
        torch.testing.assert_close(averaged[key], expected, rtol=1e-6, atol=1e-7)
    model = create_model("featherface_v2", checkpoint_path=out)
    photo = str(shared_path("data", "dlib_faces", "2008_002470.jpg"))
    soup_faces = FaceDetector(model, device="cpu")(photo)
    shipped_faces = FaceDetector("featherface_v2", device="cpu")(photo)
    assert len(soup_faces) == len(shipped_faces) > 0
    torch.testing.assert_close(soup_faces.boxes, shipped_faces.boxes, rtol=0, atol=1.0)

    # one input, another architecture, a missing tensor: each refused with the reason
    assert "at least two weight files" in subprocess.run(command, capture_output=True, text=True).stderr
    other = {"featherface": json.dumps({"arch": "featherface_v1"})}
    save_file(weights, str(tmp_path / "v1_labelled.safetensors"), metadata=other)
    result = subprocess.run(
        [*command, str(tmp_path / "v1_labelled.safetensors")], capture_output=True, text=True
    )
    assert result.returncode == 2 and "average runs of one architecture" in result.stderr
    missing = dict(weights)
    dropped = sorted(missing)[0]
    del missing[dropped]
    save_file(missing, str(tmp_path / "missing.safetensors"), metadata=metadata)
    result = subprocess.run([*command, str(tmp_path / "missing.safetensors")], capture_output=True, text=True)
    assert result.returncode == 2 and f"lacks ['{dropped}']" in result.stderr


def test_face_sizes_with_zoom_out_crops_counts_smaller_faces():
    recipe = _face_sizes_recipe()
    entries = recipe.read_labels(
        shared_path("data", "widerface_train1000", "label.txt"),
        shared_path("data", "widerface_train1000", "images"),
    )[::100]
    retina = recipe.measure(entries, 640, [0.0], repeats=2)["whole_image=0"]
    zoomed = recipe.measure(entries, 640, [0.0], repeats=2, crop_scales=(2.0,))["whole_image=0"]
    # a 2-short-side square at 640 shrinks a 1024 × 683 photo's faces by 640 / 1366 and keeps all of them;
    # RetinaFace's crops enlarge them and cut some away
    assert zoomed["faces_per_image"] > retina["faces_per_image"]
    small = slice(0, 3)  # faces under 12 px
    assert sum(zoomed["shares"][small]) > sum(retina["shares"][small]) + 0.2


def test_ap_by_event_splits_the_reference_score_of_the_original_v1_predictions(tmp_path):
    """The original V1 pipeline's subset200 predictions: all ten events scored together give the
    reference evaluator's AP; each event alone and a one-event group agree."""
    gt = shared_path("data", "wider_val_subset200", "gt")
    predictions = shared_path("golden", "wider_subset200_v1_predictions")
    command = [sys.executable, str(REPO / "recipes" / "ap_by_event.py"), "--gt", str(gt)]
    command += ["--predictions", f"original={predictions}", "--predictions", f"again={predictions}"]
    result = subprocess.run(
        [*command, "--group", ",".join(map(str, range(10))), "--json", str(tmp_path / "all.json")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "all.json").read_text())
    assert list(report["groups"]) == ["events 0,1,2,3,4,5,6,7,8,9"]  # no other events
    together = report["groups"]["events 0,1,2,3,4,5,6,7,8,9"]["original"]
    assert [together[s] for s in ("easy", "medium", "hard")] == [0.7428, 0.6292, 0.3348]
    assert together["hard_faces"] == 3477
    assert list(report["events"]) == [str(e) for e in range(10)]
    assert sum(scores["original"]["hard_faces"] for scores in report["events"].values()) == 3477
    assert all(scores["original"] == scores["again"] for scores in report["events"].values())
    assert "| again / original |" in result.stdout and "original: 0.7428 / 0.6292 / 0.3348" in result.stdout

    result = subprocess.run(
        [*command, "--group", "3", "--json", str(tmp_path / "three.json")], capture_output=True, text=True
    )
    groups = json.loads((tmp_path / "three.json").read_text())["groups"]
    assert groups["events 3"]["original"] == report["events"]["3"]["original"]
    assert (
        groups["other events"]["original"]["hard_faces"]
        == 3477 - groups["events 3"]["original"]["hard_faces"]
    )

    bad = subprocess.run([*command, "--group", "parade"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--group takes event numbers" in bad.stderr
    bad = subprocess.run([*command[:-2], "--predictions", str(predictions)], capture_output=True, text=True)
    assert bad.returncode == 2 and "expected NAME=PRED_DIR" in bad.stderr

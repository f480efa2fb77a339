"""WIDER FACE evaluation: reference numbers, invariances, a per-box transcription of the toolbox, errors."""

from __future__ import annotations

import numpy as np
import pytest

from featherface.eval import (
    SETTINGS,
    PredictionFileError,
    WiderFaceGT,
    evaluate_widerface,
    load_widerface_gt,
    read_widerface_predictions,
    write_widerface_predictions,
)
from featherface.eval.widerface import best_overlaps, voc_ap
from tests.conftest import shared_path

# The reference evaluator's numbers for the golden prediction files (issue 4, shared/golden/README.md).
REFERENCE_AP = {"easy": 0.742775, "medium": 0.629156, "hard": 0.334755}


@pytest.fixture(scope="module")
def gt_dir():
    return shared_path("data", "wider_val_subset200", "gt")


@pytest.fixture(scope="module")
def gt(gt_dir) -> WiderFaceGT:
    return load_widerface_gt(gt_dir)


@pytest.fixture(scope="module")
def golden_dir():
    return shared_path("golden", "wider_subset200_v1_predictions")


@pytest.fixture(scope="module")
def golden(golden_dir) -> dict[str, np.ndarray]:
    return read_widerface_predictions(golden_dir)


def aps(result: dict) -> dict[str, float]:
    return {setting: result[setting] for setting in SETTINGS}


def test_ground_truth_counts(gt):
    # shared/README.md: 200 images, 4,372 boxes; easy / medium / hard keep 548 / 1,189 / 3,477.
    assert len(gt.images) == 200 and sum(len(b) for b in gt.boxes) == 4372
    assert [gt.num_faces(s) for s in SETTINGS] == [548, 1189, 3477]


def test_golden_files_give_the_reference_numbers(golden_dir, gt_dir):
    result = evaluate_widerface(golden_dir, gt_dir)
    for setting, expected in REFERENCE_AP.items():
        assert result[setting] == pytest.approx(expected, abs=1e-4)
    curve = result["pr_curves"]["hard"]
    assert curve["precision"].shape == curve["recall"].shape == curve["thresholds"].shape == (1000,)
    assert np.all(np.diff(curve["recall"]) >= 0) and np.all(np.diff(curve["thresholds"]) < 0)
    assert result["num_images"] == 200 and result["num_missing"] == 0


@pytest.mark.parametrize("scores", ["constant", "random"])
def test_ground_truth_as_predictions_is_perfect(gt, scores):
    rng = np.random.default_rng(0)
    predictions = {
        image: np.c_[boxes, np.ones(len(boxes)) if scores == "constant" else rng.random(len(boxes))]
        for image, boxes in zip(gt.images, gt.boxes)
    }
    assert aps(evaluate_widerface(predictions, gt)) == pytest.approx(dict.fromkeys(SETTINGS, 1.0), abs=1e-12)


def test_row_order_inside_files_changes_nothing(golden_dir, golden, gt, tmp_path):
    rng = np.random.default_rng(1)
    for key, rows in golden.items():
        path = tmp_path / f"{key}.txt"
        path.parent.mkdir(exist_ok=True)
        shuffled = rows[rng.permutation(len(rows))].tolist()
        lines = [key.split("/")[1], str(len(rows)), *(" ".join(map(repr, row)) for row in shuffled)]
        path.write_text("\n".join(lines) + "\n")
    expected = evaluate_widerface(golden_dir, gt)
    result = evaluate_widerface(tmp_path, gt)
    assert aps(result) == aps(expected)
    for setting in SETTINGS:
        for curve in ("precision", "recall"):
            np.testing.assert_array_equal(
                result["pr_curves"][setting][curve], expected["pr_curves"][setting][curve]
            )


def test_written_files_read_back(golden, tmp_path):
    write_widerface_predictions(golden, tmp_path)
    back = read_widerface_predictions(tmp_path)
    assert back.keys() == golden.keys()
    for key, rows in golden.items():
        np.testing.assert_allclose(
            back[key], rows[np.argsort(-rows[:, 4], kind="stable")], atol=5e-4, rtol=1e-9
        )
    first = next(iter(golden))
    lines = (tmp_path / f"{first}.txt").read_text().splitlines()
    assert lines[0] == first.split("/")[1] and int(lines[1]) == len(golden[first])


def toolbox_transcription(predictions: dict, gt: WiderFaceGT, iou_threshold: float = 0.5) -> dict:
    """The MATLAB toolbox's loops, one prediction and one threshold at a time (slow; an oracle)."""
    scores = np.concatenate([p[:, 4] for p in predictions.values()])
    low, high = scores.min(), scores.max()
    result = {}
    for setting in SETTINGS:
        counts, num_faces = np.zeros((1000, 2)), 0
        for image, faces, keep in zip(gt.images, gt.boxes, gt.keep[setting]):
            num_faces += len(keep)
            pred = predictions.get(image)
            if pred is None or len(pred) == 0 or len(faces) == 0:
                continue
            pred = pred[np.argsort(-pred[:, 4], kind="stable")]
            score = (pred[:, 4] - low) / (high - low)
            scored = np.zeros(len(faces), bool)
            scored[keep] = True
            face_state, proposal, pred_recall = np.zeros(len(faces)), np.ones(len(pred)), np.zeros(len(pred))
            fx1, fy1 = faces[:, 0], faces[:, 1]
            fx2, fy2 = fx1 + faces[:, 2], fy1 + faces[:, 3]
            for h, (x, y, w, hh) in enumerate(pred[:, :4]):
                iw = np.minimum(fx2, x + w) - np.maximum(fx1, x) + 1
                ih = np.minimum(fy2, y + hh) - np.maximum(fy1, y) + 1
                area = (fx2 - fx1 + 1) * (fy2 - fy1 + 1) + (w + 1) * (hh + 1)
                overlap = np.where((iw > 0) & (ih > 0), iw * ih / (area - iw * ih), 0.0)
                best = int(np.argmax(overlap))
                if overlap[best] >= iou_threshold:
                    if not scored[best]:
                        face_state[best], proposal[h] = -1, -1
                    elif face_state[best] == 0:
                        face_state[best] = 1
                pred_recall[h] = np.sum(face_state == 1)
            for t in range(1000):
                above = np.flatnonzero(score >= 1 - (t + 1) / 1000)
                if above.size:
                    last = above[-1]
                    counts[t] += (np.sum(proposal[: last + 1] == 1), pred_recall[last])
        with np.errstate(invalid="ignore"):
            precision = counts[:, 1] / counts[:, 0]
        recall = counts[:, 1] / num_faces
        mrec, mpre = np.r_[0, recall, 1], np.r_[0, precision, 0]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = np.fmax(mpre[i], mpre[i + 1])
        step = np.flatnonzero(mrec[1:] != mrec[:-1])
        result[setting] = (float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1])), precision, recall)
    return result


def test_matches_a_per_box_transcription_of_the_toolbox(golden, gt):
    # 30 images, rows shuffled, scores rounded to 2 decimals (many ties), some boxes shifted.
    rng = np.random.default_rng(2)
    subset = WiderFaceGT(gt.images[:30], gt.boxes[:30], {s: gt.keep[s][:30] for s in SETTINGS})
    predictions = {}
    for image in subset.images:
        rows = golden[image][rng.permutation(len(golden[image]))].copy()
        rows[:, 4] = rows[:, 4].round(2)
        rows[::3, :2] += rng.normal(scale=2.0, size=rows[::3, :2].shape)
        predictions[image] = rows
    expected = toolbox_transcription(predictions, subset)
    result = evaluate_widerface(predictions, subset)
    for setting, (ap, precision, recall) in expected.items():
        assert result[setting] == pytest.approx(ap, abs=1e-12)
        np.testing.assert_allclose(result["pr_curves"][setting]["recall"], recall, rtol=0, atol=1e-12)
        defined = ~np.isnan(precision)
        np.testing.assert_allclose(
            result["pr_curves"][setting]["precision"][defined], precision[defined], atol=1e-12
        )


def test_images_without_predictions_count_as_missed(golden, gt):
    dropped = gt.images[:10]
    partial = {k: v for k, v in golden.items() if k not in dropped}
    with pytest.warns(UserWarning, match=r"10 of 200 ground-truth images have no predictions"):
        result = evaluate_widerface(partial, gt)
    empty = {**partial, **{k: np.zeros((0, 5)) for k in dropped}}
    assert aps(result) == aps(evaluate_widerface(empty, gt))
    full = evaluate_widerface(golden, gt)
    assert result["hard"] < full["hard"] and result["num_missing"] == 10
    with pytest.warns(UserWarning, match=r"200 of 200"):
        assert aps(evaluate_widerface({}, gt)) == dict.fromkeys(SETTINGS, 0.0)


def test_iou_uses_the_plus_one_pixel_convention():
    # 10×10-pixel boxes (w = 9 means x .. x+9 inclusive) overlapping by 5 columns: 50 / 150.
    index, iou = best_overlaps(np.array([[5.0, 0, 9, 9]]), np.array([[100.0, 100, 9, 9], [0.0, 0, 9, 9]]))
    assert index.tolist() == [1] and iou[0] == pytest.approx(1 / 3)
    index, iou = best_overlaps(np.array([[50.0, 50, 4, 4]]), np.array([[0.0, 0, 9, 9]]))
    assert iou[0] == 0.0


def test_voc_ap_is_the_area_under_the_precision_envelope():
    # envelope: precision 1 up to recall 0.5, then 0.5 up to recall 1 → 0.5 + 0.25.
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 0.5])) == pytest.approx(0.75)
    assert voc_ap(np.array([0.0, 0.4]), np.array([1.0, 1.0])) == pytest.approx(0.4)


def test_wrong_gt_dir_is_explained(tmp_path, gt_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_widerface_gt(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"lacks wider_face_val\.mat, wider_easy_val\.mat"):
        load_widerface_gt(tmp_path)
    with pytest.raises(ValueError, match="is a file, not a folder"):
        load_widerface_gt(gt_dir / "wider_face_val.mat")


def test_foreign_mat_files_are_refused(tmp_path):
    from scipy.io import savemat

    for name in ("wider_face_val.mat", "wider_easy_val.mat", "wider_medium_val.mat", "wider_hard_val.mat"):
        savemat(tmp_path / name, {"boxes": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="has no 'event_list' variable"):
        load_widerface_gt(tmp_path)


def test_ground_truth_files_of_different_splits_are_refused(tmp_path, gt_dir):
    from scipy.io import loadmat, savemat

    full = shared_path("data", "widerface_val_gt")
    for name in ("wider_face_val.mat", "wider_easy_val.mat", "wider_medium_val.mat"):
        (tmp_path / name).symlink_to(gt_dir / name)
    (tmp_path / "wider_hard_val.mat").symlink_to(full / "wider_hard_val.mat")
    with pytest.raises(ValueError, match=r"lists 3226 images in 61 events but .* lists 200 in 10"):
        load_widerface_gt(tmp_path)
    hard = loadmat(gt_dir / "wider_hard_val.mat")
    hard["gt_list"][0, 0][0, 0] = np.array([[999]])
    (tmp_path / "wider_hard_val.mat").unlink()
    savemat(tmp_path / "wider_hard_val.mat", {"gt_list": hard["gt_list"]})
    with pytest.raises(ValueError, match=r"kept face indices of 0--Parade/\S+ run outside its \d+ boxes"):
        load_widerface_gt(tmp_path)


def test_missing_scipy_names_the_extra(monkeypatch, gt_dir):
    monkeypatch.setitem(__import__("sys").modules, "scipy.io", None)
    with pytest.raises(ImportError, match=r"featherface\[eval\]"):
        load_widerface_gt(gt_dir)


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("img\n2\n1 2 3 4 0.9\n1 2 3 0.5\n", "line 4", "expected 5 numbers"),
        ("img\n2\n1 2 3 4 0.9\n1 2 x 4 0.5\n", "line 4", "not a number"),
        ("img\n2\n1 2 3 4 0.9\n", "line 2", "says 2 but the file has 1"),
        ("img\ntwo\n", "line 2", "must be an integer"),
        ("img\n1\n1 2 3 4 nan\n", "line 3", "non-finite"),
        ("", "line 1", "ends before the box count"),
    ],
)
def test_malformed_prediction_files_name_file_and_line(tmp_path, text, where, problem):
    path = tmp_path / "0--Parade" / "0_Parade_Parade_0_102.txt"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(PredictionFileError, match=rf"0_Parade_Parade_0_102\.txt, {where}: .*{problem}"):
        read_widerface_predictions(tmp_path)


def test_prediction_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_widerface_predictions(tmp_path / "nowhere")
    nested = tmp_path / "run" / "predictions" / "0--Parade" / "a.txt"
    nested.parent.mkdir(parents=True)
    nested.write_text("a\n0\n")
    with pytest.raises(FileNotFoundError, match=r"did you mean .*predictions\?"):
        read_widerface_predictions(tmp_path)


def test_predictions_for_unknown_images_are_refused(golden, gt):
    bad = {**golden, "0--Parade/0_Parade_Parade_0_102.jpg": np.zeros((0, 5))}
    with pytest.raises(ValueError, match=r"1 images that are not in the ground truth.*without extension"):
        evaluate_widerface(bad, gt)
    with pytest.raises(ValueError, match=r"expected \(N, 5\)"):
        evaluate_widerface({gt.images[0]: np.zeros((3, 4))}, gt)
    with pytest.raises(ValueError, match="NaN or infinite"):
        evaluate_widerface({gt.images[0]: np.full((1, 5), np.nan)}, gt)
    with pytest.raises(ValueError, match=r"iou_threshold must be in \(0, 1\]"):
        evaluate_widerface(golden, gt, iou_threshold=50)

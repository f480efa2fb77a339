"""The official WIDER FACE evaluation protocol (easy / medium / hard AP), vectorised with numpy.

It reproduces the MATLAB toolbox (``eval_tools/wider_eval.m``): predictions sorted by score,
scores min–max normalised over the whole set, IoU with the "+1 pixel" convention, a prediction whose
best-overlap face is not scored by the setting is ignored, 1000 score thresholds, PR counts summed
over images, VOC all-point AP.

The toolbox walks each image's score-sorted predictions and, at every threshold, reads the counts
at the last prediction above it. Those counts only depend on the *set* of predictions above the
threshold: the proposals among them, and the scored faces that at least one of them hits. Counting
both directly against the thresholds gives the same numbers without any per-box loop.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

import numpy as np

from featherface.eval.widerface_files import read_widerface_predictions
from featherface.eval.widerface_gt import SETTINGS, WiderFaceGT, load_widerface_gt

NUM_THRESHOLDS = 1000
THRESHOLDS = 1.0 - np.arange(1, NUM_THRESHOLDS + 1) / NUM_THRESHOLDS


def best_overlaps(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best ground-truth face of each prediction, as the toolbox's ``boxoverlap`` + ``max`` find it.

    ``pred (N, 4)`` and ``gt (G, 4)`` are ``x y w h`` pixels with ``x2 = x + w``; areas and
    intersections count pixels inclusively (``x2 - x1 + 1``). Returns the index ``(N,)`` of the
    first face with the highest IoU and that IoU ``(N,)``.
    """
    px1, py1 = pred[:, 0:1], pred[:, 1:2]
    px2, py2 = px1 + pred[:, 2:3], py1 + pred[:, 3:4]
    gx1, gy1 = gt[:, 0], gt[:, 1]
    gx2, gy2 = gx1 + gt[:, 2], gy1 + gt[:, 3]
    iw = np.minimum(px2, gx2) - np.maximum(px1, gx1) + 1
    ih = np.minimum(py2, gy2) - np.maximum(py1, gy1) + 1
    inter = iw * ih
    union = (px2 - px1 + 1) * (py2 - py1 + 1) + (gx2 - gx1 + 1) * (gy2 - gy1 + 1) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=(iw > 0) & (ih > 0) & (union > 0))
    index = iou.argmax(axis=1)
    return index, iou[np.arange(len(index)), index]


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point AP: area under the precision envelope, recall ``(T,)`` non-decreasing."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def _as_mapping(predictions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    checked = {}
    for key, value in predictions.items():
        array = np.asarray(value, dtype=np.float64)
        if array.size == 0:
            array = array.reshape(0, 5)
        if array.ndim != 2 or array.shape[1] != 5:
            raise ValueError(
                f"predictions[{key!r}] has shape {array.shape}; expected (N, 5) rows of x y w h score"
            )
        if not np.isfinite(array).all():
            raise ValueError(f"predictions[{key!r}] holds NaN or infinite values")
        checked[key] = array
    return checked


def _match_images(predictions: dict[str, np.ndarray], gt: WiderFaceGT, gt_name: str) -> list[str]:
    """Check that every prediction belongs to a ground-truth image; return the images without one."""
    known = set(gt.images)
    unknown = sorted(key for key in predictions if key not in known)
    if unknown:
        shown = ", ".join(repr(key) for key in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise ValueError(
            f"predictions for {len(unknown)} images that are not in the ground truth {gt_name}: {shown}. "
            f"Keys are '<event>/<image>' without extension (e.g. {gt.images[0]!r}); check that the "
            "predictions and the ground truth are of the same split"
        )
    return [image for image in gt.images if image not in predictions]


def _normalise(scores: np.ndarray, predictions: dict[str, np.ndarray]) -> np.ndarray:
    """Min–max normalise ``scores`` with the minimum and maximum of all predictions (1 if they are equal)."""
    everything = np.concatenate([np.zeros(0), *(p[:, 4] for p in predictions.values())])
    if not everything.size or everything.max() == everything.min():
        return np.ones_like(scores)
    low, high = everything.min(), everything.max()
    return (scores - low) / (high - low)


def _count_above(values: np.ndarray) -> np.ndarray:
    """How many ``values`` are ``>=`` each of the thresholds: ``(NUM_THRESHOLDS,)`` int."""
    return values.size - np.searchsorted(np.sort(values), THRESHOLDS, side="left")


def _match_predictions(
    predictions: dict[str, np.ndarray], gt: WiderFaceGT, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every scored prediction's score, best face (index into all faces of the split) and whether it
    overlaps that face enough, as three ``(M,)`` arrays.

    Like the toolbox, images without faces or without predictions contribute no prediction.
    """
    scores, face_index, hit = [np.zeros(0)], [np.zeros(0, np.int64)], [np.zeros(0, bool)]
    first_face = np.cumsum([0] + [len(boxes) for boxes in gt.boxes])
    for i, image in enumerate(gt.images):
        pred = predictions.get(image)
        if pred is None or not len(pred) or not len(gt.boxes[i]):
            continue
        index, iou = best_overlaps(pred[:, :4], gt.boxes[i])
        scores.append(pred[:, 4])
        face_index.append(index + first_face[i])
        hit.append(iou >= iou_threshold)
    return np.concatenate(scores), np.concatenate(face_index), np.concatenate(hit)


def _pr_curve(
    scores: np.ndarray, face_index: np.ndarray, hit: np.ndarray, gt: WiderFaceGT, setting: str
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall ``(NUM_THRESHOLDS,)`` of one setting from :func:`_match_predictions`.

    A prediction is a proposal unless its best face is hit but not scored by the setting; a scored
    face is detected at a threshold when a prediction that hits it scores at least that much.
    """
    first_face = np.cumsum([0] + [len(boxes) for boxes in gt.boxes])
    scored = np.zeros(first_face[-1], dtype=bool)
    scored[np.concatenate([keep + first_face[i] for i, keep in enumerate(gt.keep[setting])])] = True
    hits_scored = hit & scored[face_index]
    proposals = _count_above(scores[~hit | scored[face_index]])
    face_score = np.full(first_face[-1], -np.inf)
    np.maximum.at(face_score, face_index[hits_scored], scores[hits_scored])
    detected = _count_above(face_score[scored])
    precision = np.divide(detected, proposals, out=np.ones(NUM_THRESHOLDS), where=proposals > 0)
    return precision, detected / max(gt.num_faces(setting), 1)


def evaluate_widerface(
    predictions: str | os.PathLike | Mapping[str, np.ndarray],
    gt_dir: str | os.PathLike | WiderFaceGT,
    iou_threshold: float = 0.5,
) -> dict:
    """Score predictions with the official WIDER FACE protocol.

    Args:
        predictions: a folder in the official layout (``<event>/<image>.txt``) or a mapping
            ``{"<event>/<image>": (N, 5) array}`` of ``x y w h score`` rows in pixels.
        gt_dir: the folder with ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat``
            (or a :class:`WiderFaceGT` already loaded).
        iou_threshold: IoU a prediction needs with a face to detect it.

    Returns:
        ``{"easy": AP, "medium": AP, "hard": AP, "pr_curves": {setting: {"thresholds", "precision",
        "recall"}}, ...}`` with the curves as ``(1000,)`` arrays over descending normalised-score
        thresholds (precision is 1 where no prediction passes), plus ``iou_threshold``, ``num_images``,
        ``num_missing`` and ``num_faces`` per setting.

    Images without predictions count all their faces as missed (a warning says how many).
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}; the official value is 0.5")
    gt = gt_dir if isinstance(gt_dir, WiderFaceGT) else load_widerface_gt(gt_dir)
    if isinstance(predictions, Mapping):
        predictions = _as_mapping(predictions)
    else:
        predictions = read_widerface_predictions(predictions)
    missing = _match_images(predictions, gt, "given" if isinstance(gt_dir, WiderFaceGT) else str(gt_dir))
    if missing:
        faces = sum(len(boxes) for image, boxes in zip(gt.images, gt.boxes) if image not in predictions)
        warnings.warn(
            f"{len(missing)} of {len(gt.images)} ground-truth images have no predictions "
            f"(e.g. {missing[0]!r}); their {faces} faces count as missed",
            stacklevel=2,
        )
    scores, face_index, hit = _match_predictions(predictions, gt, iou_threshold)
    scores = _normalise(scores, predictions)
    result: dict = {"pr_curves": {}}
    for setting in SETTINGS:
        precision, recall = _pr_curve(scores, face_index, hit, gt, setting)
        result[setting] = voc_ap(recall, precision)
        result["pr_curves"][setting] = {
            "thresholds": THRESHOLDS.copy(),
            "precision": precision,
            "recall": recall,
        }
    result.update(
        iou_threshold=iou_threshold,
        num_images=len(gt.images),
        num_missing=len(missing),
        num_faces={setting: gt.num_faces(setting) for setting in SETTINGS},
    )
    return result

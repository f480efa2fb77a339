"""Face sizes at the original image size and after the training augmentation; recall by face size.

    python recipes/face_sizes.py [--labels LABEL.txt] [--images DIR] [--image-size 640]
        [--whole-image 0 0.2 ...] [--crop-scales S,S,...] [--repeats 3] [--every K] [--json OUT.json]
        [--face-balance 0 0.5 1] [--model NAME[=CHECKPOINT] ...] [--score 0.2 0.5]

Counts faces by side ``sqrt(w·h)`` in pixels: once at the images' original size (how a detector
meets them at test time) and, per ``--whole-image`` probability, after ``TrainAugment``'s geometry
(crop or whole image, pad, resize; no colour changes or flips, which do not move sizes) drawn
``--repeats`` times per image, with the crop sides ``--crop-scales`` (RetinaFace's by default).
Prints each row's share of faces per size bin and faces per image.
For the augmented faces it also matches them to the priors of a training image and prints, per
``--face-balance`` G, each size bin's share of the positive priors' weight in the ground-truth
loss (a face with n positive priors weighs n^(1 − G)). With ``--model``, also runs each detector
on the images at their original size and prints, per size bin and ``--score`` threshold, the
share of faces it finds (a detection with that score and IoU ≥ 0.5, matched greedily by score),
and per threshold its stray detections per image: detections that overlap no labelled face at all,
and its average precision over every labelled face (the WIDER FACE protocol's matching, all
faces scored): how well it fits the labels, recall and precision in one number.
Meant for training labels: a size breakdown of validation images would tempt tuning on them.
"""

from __future__ import annotations

import argparse
import json
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision

from featherface import FaceDetector
from featherface.cli.training_options import parse_crop_scales
from featherface.eval.predict import WIDERFACE_DETECTOR_SETTINGS, xyxy_to_widerface
from featherface.eval.widerface import evaluate_widerface
from featherface.eval.widerface_gt import SETTINGS, WiderFaceGT
from featherface.priors import prior_boxes
from featherface.training.augment import CROP_SCALES, TrainAugment
from featherface.training.data import Sample
from featherface.training.labels import ImageLabels, read_labels
from featherface.training.matching import match_priors

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface_train1000"
#: Lower edges of the size bins (pixels); the last bin is open.
BIN_EDGES = (0, 4, 8, 12, 16, 24, 32, 64)


def face_sides(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` ``x1 y1 x2 y2`` → ``(N,)`` ``sqrt(w·h)``."""
    return np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))


def histogram(sides: np.ndarray, images: int) -> dict[str, object]:
    """Share of faces per bin (summing to 1), the face count and faces per image."""
    counts = np.histogram(sides, bins=[*BIN_EDGES, np.inf])[0]
    return {
        "shares": (counts / max(counts.sum(), 1)).round(4).tolist(),
        "faces": int(counts.sum()),
        "faces_per_image": round(float(counts.sum()) / max(images, 1), 2),
    }


def priors_per_face(boxes: np.ndarray, priors: torch.Tensor, image_size: int) -> np.ndarray:
    """``(N, 4)`` pixel boxes of a square ``image_size`` training image → ``(N,)`` the number of
    priors matched to each face (0 for a face too small to match any)."""
    if not len(boxes):
        return np.zeros(0)
    positive, matched = match_priors(torch.from_numpy(boxes).float() / image_size, priors)
    return np.bincount(matched[positive].numpy(), minlength=len(boxes)).astype(float)


def loss_weight_shares(sides: np.ndarray, priors: np.ndarray, face_balance: float) -> list[float]:
    """Per size bin, its share of the positive priors' weight: a face with ``n`` priors weighs
    ``n^(1 − face_balance)`` (``n`` priors of weight ``n^-face_balance`` each; 0 when ``n = 0``)."""
    weights = np.where(priors > 0, priors ** (1.0 - face_balance), 0.0)
    per_bin = np.bincount(np.digitize(sides, BIN_EDGES) - 1, weights, minlength=len(BIN_EDGES))
    return (per_bin / max(per_bin.sum(), 1e-12)).round(4).tolist()


def measure(
    entries: list[ImageLabels],
    image_size: int,
    whole_image: list[float],
    repeats: int,
    face_balance: tuple[float, ...] = (),
    crop_scales: tuple[float, ...] = CROP_SCALES,
) -> dict[str, dict[str, object]]:
    """Rows ``"original"`` and ``"whole_image=P"`` of :func:`histogram` results; augmented rows
    also hold ``loss_weight`` (per ``face_balance`` G, :func:`loss_weight_shares`)."""
    original, augmented = [], {p: [] for p in whole_image}
    matched = {p: [] for p in whole_image}
    priors = prior_boxes(image_size, image_size)
    augments = {
        p: TrainAugment(image_size, distort=False, flip=0.0, whole_image=p, crop_scales=crop_scales)
        for p in whole_image
    }
    for index, entry in enumerate(entries):
        image = cv2.imread(str(entry.path))
        if image is None:
            raise FileNotFoundError(f"cannot read {entry.path}")
        sample = Sample(image, entry.boxes, entry.landmarks, entry.has_landmarks, True, str(entry.path))
        original.append(face_sides(entry.boxes))
        for p, augment in augments.items():
            for repeat in range(repeats):
                out = augment(sample, np.random.default_rng((repeat, index)))
                augmented[p].append(face_sides(out.boxes))
                if face_balance:
                    matched[p].append(priors_per_face(out.boxes, priors, image_size))
    rows = {"original": histogram(np.concatenate(original), len(entries))}
    for p, parts in augmented.items():
        sides = np.concatenate(parts)
        row = histogram(sides, len(entries) * repeats)
        if face_balance:
            counts = np.concatenate(matched[p])
            row["loss_weight"] = {f"{g:g}": loss_weight_shares(sides, counts, g) for g in face_balance}
        rows[f"whole_image={p:g}"] = row
    return rows


def found_faces(boxes: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(N, 4)`` detections sorted by score, ``(M, 4)`` faces → ``(M,)`` bool: matched at IoU ≥ 0.5,
    each detection taking the best still unmatched face."""
    found = np.zeros(len(truth), bool)
    if len(boxes) and len(truth):
        overlaps = torchvision.ops.box_iou(torch.from_numpy(boxes), torch.from_numpy(truth)).numpy()
        for row in overlaps:
            row = np.where(found, -1.0, row)
            best = int(row.argmax())
            found[best] |= row[best] >= 0.5
    return found


def stray_detections(boxes: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(N, 4)`` detections, ``(M, 4)`` faces → ``(N,)`` bool: the detection overlaps no face."""
    if not len(truth):
        return np.ones(len(boxes), bool)
    if not len(boxes):
        return np.zeros(0, bool)
    return torchvision.ops.box_iou(torch.from_numpy(boxes), torch.from_numpy(truth)).amax(dim=1).numpy() <= 0


def labelled_face_ap(detections: list[np.ndarray], entries: list[ImageLabels]) -> float:
    """Average precision over every labelled face of ``entries`` with WIDER FACE's matching (IoU ≥
    0.5, 1,000 score thresholds); ``detections`` are one ``(N, 5)`` array of ``x1 y1 x2 y2 score``
    per entry."""
    keys = [f"{i}/{entry.path.stem}" for i, entry in enumerate(entries)]
    truth = tuple(
        np.concatenate([e.boxes[:, :2], e.boxes[:, 2:] - e.boxes[:, :2]], axis=1).astype(np.float64)
        for e in entries
    )
    every_face = tuple(np.arange(len(boxes)) for boxes in truth)
    labels = WiderFaceGT(tuple(keys), truth, dict.fromkeys(SETTINGS, every_face))
    predictions = {key: xyxy_to_widerface(d[:, :4], d[:, 4]) for key, d in zip(keys, detections)}
    return round(float(evaluate_widerface(predictions, labels)["hard"]), 4)


def recall_by_size(
    detector: FaceDetector, entries: list[ImageLabels], scores: list[float]
) -> tuple[dict[str, list[float | None]], dict[str, float], float]:
    """Per ``score`` threshold, the share of faces found per size bin (original image size; ``None``
    for a bin without faces), the :func:`stray_detections` per image, and the
    :func:`labelled_face_ap` of all detections."""
    found = {score: [] for score in scores}
    stray = dict.fromkeys(scores, 0)
    sides, detections = [], []
    for entry in entries:
        faces = detector(str(entry.path))
        order = np.argsort(-faces.scores.numpy(), kind="stable")
        boxes, confidences = faces.boxes.numpy()[order], faces.scores.numpy()[order]
        detections.append(np.concatenate([boxes, confidences[:, None]], axis=1))
        sides.append(face_sides(entry.boxes))
        strays = stray_detections(boxes, entry.boxes)
        for score in scores:
            found[score].append(found_faces(boxes[confidences >= score], entry.boxes))
            stray[score] += int((strays & (confidences >= score)).sum())
    bins = np.digitize(np.concatenate(sides), BIN_EDGES) - 1
    result = {}
    for score, hits in found.items():
        hits = np.concatenate(hits)
        result[f"score>={score:g}"] = [
            round(float(hits[bins == b].mean()), 4) if (bins == b).any() else None
            for b in range(len(BIN_EDGES))
        ]
    per_image = {
        f"score>={score:g}": round(count / max(len(entries), 1), 2) for score, count in stray.items()
    }
    return result, per_image, labelled_face_ap(detections, entries)


def _detector(spec: str) -> FaceDetector:
    """``NAME[=CHECKPOINT]`` → a CPU detector with the WIDER FACE evaluation's thresholds."""
    name, _, checkpoint = spec.partition("=")
    return FaceDetector(name, checkpoint_path=checkpoint or None, device="cpu", **WIDERFACE_DETECTOR_SETTINGS)


def _print_table(first_column: str, header: list[str], rows: dict[str, list[str]], last: str = "") -> None:
    print(f"| {first_column} | " + " | ".join(f"{h} px" for h in header) + (f" | {last} |" if last else " |"))
    print("|---|" + "---:|" * (len(header) + bool(last)))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=SHARED / "label.txt")
    parser.add_argument("--images", type=Path, default=SHARED / "images")
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--whole-image", type=float, nargs="+", default=[0.0, 0.2, 0.4])
    parser.add_argument(
        "--crop-scales",
        type=parse_crop_scales,
        default=CROP_SCALES,
        metavar="S,S,...",
        help="crop sides as fractions of the short side; above 1 zooms out (RetinaFace's by default)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="augmented draws per image (3)")
    parser.add_argument("--every", type=int, default=1, help="only every K-th image (1: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--face-balance",
        type=float,
        nargs="*",
        default=[0.0, 0.5, 1.0],
        metavar="G",
        help="loss weight shares of the positive priors by face size at these face_balance values",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME[=CHECKPOINT]",
        help="also measure this detector's recall by face size (repeatable)",
    )
    parser.add_argument("--score", type=float, nargs="+", default=[0.2, 0.5], help="recall thresholds")
    args = parser.parse_args()
    entries = read_labels(args.labels, args.images)[:: args.every]
    rows = measure(
        entries, args.image_size, args.whole_image, args.repeats, tuple(args.face_balance), args.crop_scales
    )
    edges = [*BIN_EDGES, None]
    header = [f"{lo}–{hi}" if hi is not None else f"≥{lo}" for lo, hi in pairwise(edges)]
    cells = {
        name: [f"{100 * s:.1f}%" for s in row["shares"]] + [str(row["faces_per_image"])]
        for name, row in rows.items()
    }
    _print_table("faces", header, cells, "faces / image")
    if args.face_balance:
        print("\nshare of the positive priors' weight in the ground-truth loss, by face size:")
        weights = {
            f"{name}, face_balance={g}": [f"{100 * s:.1f}%" for s in shares]
            for name, row in rows.items()
            for g, shares in row.get("loss_weight", {}).items()
        }
        _print_table("training faces", header, weights)
    measured = {spec: recall_by_size(_detector(spec), entries, args.score) for spec in args.model}
    recall = {spec: found for spec, (found, _, _) in measured.items()}
    stray = {spec: per_image for spec, (_, per_image, _) in measured.items()}
    average_precision = {spec: ap for spec, (_, _, ap) in measured.items()}
    for score in args.score if recall else []:
        key = f"score>={score:g}"
        print(f"\nfaces found with score ≥ {score:g} and IoU ≥ 0.5, by size at the original image size:")
        _print_table(
            "model",
            header,
            {
                spec: ["–" if r is None else f"{r:.3f}" for r in found[key]] + [f"{stray[spec][key]:.2f}"]
                for spec, found in recall.items()
            },
            "stray detections / image",
        )
    if average_precision:
        print("\naverage precision over every labelled face (WIDER FACE matching, IoU ≥ 0.5):")
        for spec, ap in average_precision.items():
            print(f"  {spec}: {ap:.4f}")
    if args.json:
        report = {"faces": rows, "recall": recall, "stray_per_image": stray, "ap": average_precision}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

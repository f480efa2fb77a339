"""Face sizes at the original image size and after the training augmentation; recall by face size.

    python recipes/face_sizes.py [--labels LABEL.txt] [--images DIR] [--image-size 640]
        [--whole-image 0 0.2 ...] [--repeats 3] [--every K] [--json OUT.json]
        [--model NAME[=CHECKPOINT] ...] [--score 0.2 0.5]

Counts faces by side ``sqrt(w·h)`` in pixels: once at the images' original size (how a detector
meets them at test time) and, per ``--whole-image`` probability, after ``TrainAugment``'s geometry
(crop or whole image, pad, resize; no colour changes or flips, which do not move sizes) drawn
``--repeats`` times per image. Prints each row's share of faces per size bin and faces per image.
With ``--model``, also runs each detector on the images at their original size and prints, per
size bin and ``--score`` threshold, the share of faces it finds (a detection with that score
and IoU ≥ 0.5, matched greedily by score). Meant for training labels: a size breakdown of
validation images would tempt tuning on them.
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
from featherface.eval.predict import WIDERFACE_DETECTOR_SETTINGS
from featherface.training.augment import TrainAugment
from featherface.training.data import Sample
from featherface.training.labels import ImageLabels, read_labels

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


def measure(
    entries: list[ImageLabels], image_size: int, whole_image: list[float], repeats: int
) -> dict[str, dict[str, object]]:
    """Rows ``"original"`` and ``"whole_image=P"`` of :func:`histogram` results."""
    original, augmented = [], {p: [] for p in whole_image}
    augments = {p: TrainAugment(image_size, distort=False, flip=0.0, whole_image=p) for p in whole_image}
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
    rows = {"original": histogram(np.concatenate(original), len(entries))}
    for p, sides in augmented.items():
        rows[f"whole_image={p:g}"] = histogram(np.concatenate(sides), len(entries) * repeats)
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


def recall_by_size(
    detector: FaceDetector, entries: list[ImageLabels], scores: list[float]
) -> dict[str, list[float | None]]:
    """Per ``score`` threshold, the share of faces found per size bin (original image size; ``None``
    for a bin without faces)."""
    found = {score: [] for score in scores}
    sides = []
    for entry in entries:
        faces = detector(str(entry.path))
        order = np.argsort(-faces.scores.numpy(), kind="stable")
        boxes, confidences = faces.boxes.numpy()[order], faces.scores.numpy()[order]
        sides.append(face_sides(entry.boxes))
        for score in scores:
            found[score].append(found_faces(boxes[confidences >= score], entry.boxes))
    bins = np.digitize(np.concatenate(sides), BIN_EDGES) - 1
    result = {}
    for score, hits in found.items():
        hits = np.concatenate(hits)
        result[f"score>={score:g}"] = [
            round(float(hits[bins == b].mean()), 4) if (bins == b).any() else None
            for b in range(len(BIN_EDGES))
        ]
    return result


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
    parser.add_argument("--repeats", type=int, default=3, help="augmented draws per image (3)")
    parser.add_argument("--every", type=int, default=1, help="only every K-th image (1: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
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
    rows = measure(entries, args.image_size, args.whole_image, args.repeats)
    edges = [*BIN_EDGES, None]
    header = [f"{lo}–{hi}" if hi is not None else f"≥{lo}" for lo, hi in pairwise(edges)]
    cells = {
        name: [f"{100 * s:.1f}%" for s in row["shares"]] + [str(row["faces_per_image"])]
        for name, row in rows.items()
    }
    _print_table("faces", header, cells, "faces / image")
    recall = {spec: recall_by_size(_detector(spec), entries, args.score) for spec in args.model}
    for score in args.score:
        key = f"score>={score:g}"
        print(f"\nfaces found with score ≥ {score:g} and IoU ≥ 0.5, by size at the original image size:")
        _print_table(
            "model",
            header,
            {spec: ["–" if r is None else f"{r:.3f}" for r in found[key]] for spec, found in recall.items()},
        )
    if args.json:
        args.json.write_text(json.dumps({"faces": rows, "recall": recall}, indent=2))


if __name__ == "__main__":
    main()

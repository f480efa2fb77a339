"""Face sizes at the original image size and after the training augmentation's crop or whole image.

    python recipes/face_sizes.py [--labels LABEL.txt] [--images DIR] [--image-size 640]
        [--whole-image 0 0.2 ...] [--repeats 3] [--limit N] [--json OUT.json]

Counts faces by side ``sqrt(w·h)`` in pixels: once at the images' original size (how a detector
meets them at test time) and, per ``--whole-image`` probability, after ``TrainAugment``'s geometry
(crop or whole image, pad, resize; no colour changes or flips, which do not move sizes) drawn
``--repeats`` times per image. Prints each row's share of faces per size bin and faces per image.
Uses training labels only.
"""

from __future__ import annotations

import argparse
import json
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np

from featherface.training.augment import TrainAugment
from featherface.training.data import Sample
from featherface.training.labels import read_labels

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
    labels_file: Path,
    images: Path,
    image_size: int,
    whole_image: list[float],
    repeats: int,
    limit: int | None,
) -> dict[str, dict[str, object]]:
    """Rows ``"original"`` and ``"whole_image=P"`` of :func:`histogram` results."""
    entries = read_labels(labels_file, images)[:limit]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=SHARED / "label.txt")
    parser.add_argument("--images", type=Path, default=SHARED / "images")
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--whole-image", type=float, nargs="+", default=[0.0, 0.2, 0.4])
    parser.add_argument("--repeats", type=int, default=3, help="augmented draws per image (3)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    rows = measure(args.labels, args.images, args.image_size, args.whole_image, args.repeats, args.limit)
    edges = [*BIN_EDGES, None]
    header = [f"{lo}–{hi}" if hi is not None else f"≥{lo}" for lo, hi in pairwise(edges)]
    print("| faces | " + " | ".join(f"{h} px" for h in header) + " | faces / image |")
    print("|---|" + "---:|" * (len(header) + 1))
    for name, row in rows.items():
        shares = " | ".join(f"{100 * s:.1f}%" for s in row["shares"])
        print(f"| {name} | {shares} | {row['faces_per_image']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

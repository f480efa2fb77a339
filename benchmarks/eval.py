"""Speed of the WIDER FACE evaluator on the full val set (3,226 images) with synthetic predictions.

The predictions come from the official ground truth: every face jittered, plus random false
positives, 750 per image. They are written in the official layout to a temporary folder, then
scored from the files (ground-truth loading and parsing included) and from memory.

    .venv/bin/python benchmarks/eval.py [--gt ../shared/data/widerface_val_gt]
        [--out runs/benchmarks/eval.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from featherface.eval import evaluate_widerface, load_widerface_gt, write_widerface_predictions
from featherface.eval.widerface_files import read_widerface_predictions

REPO = Path(__file__).resolve().parents[1]
PER_IMAGE = 750


def image_sizes(gt_dir: Path) -> dict[str, tuple[int, int]]:
    """``{"event/image": (width, height)}`` from ``labelv2_val_scrfd_format.txt`` when present."""
    path = gt_dir / "labelv2_val_scrfd_format.txt"
    if not path.exists():
        return {}
    sizes = {}
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            name, width, height = line[1:].split()
            sizes[name.rsplit(".", 1)[0]] = (int(width), int(height))
    return sizes


def synthetic_predictions(gt, sizes: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Every face jittered (score 0.3–1) plus random false positives (score 0.02–0.7), 750 rows per image."""
    rng = np.random.default_rng(seed)
    predictions = {}
    for image, faces in zip(gt.images, gt.boxes):
        faces = faces[:PER_IMAGE]
        size = faces[:, 2:4].clip(min=1)
        jittered = faces + rng.normal(scale=0.08, size=faces.shape) * np.tile(size, 2)
        width, height = sizes.get(image, (1024, 1024))
        extra = PER_IMAGE - len(faces)
        wh = np.exp(rng.uniform(np.log(6), np.log(300), size=(extra, 2)))
        xy = rng.uniform(0, 1, size=(extra, 2)) * (np.array([width, height]) - wh).clip(min=1)
        boxes = np.concatenate([jittered, np.concatenate([xy, wh], axis=1)])
        scores = np.concatenate([rng.uniform(0.3, 1.0, len(faces)), rng.uniform(0.02, 0.7, extra)])
        predictions[image] = np.concatenate([boxes, scores[:, None]], axis=1)
    return predictions


def timed(fn, *args):
    """``fn(*args)`` and its (wall, CPU) seconds; CPU time shows how much of the wall time was waiting
    for a core that other processes held."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn(*args)
    return value, (time.perf_counter() - wall, time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", type=Path, default=REPO.parent / "shared" / "data" / "widerface_val_gt")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "benchmarks" / "eval.json")
    args = parser.parse_args()

    gt, load_s = timed(load_widerface_gt, args.gt)
    predictions = synthetic_predictions(gt, image_sizes(args.gt))
    with tempfile.TemporaryDirectory() as tmp:
        write_widerface_predictions(predictions, tmp)
        _, parse_s = timed(read_widerface_predictions, tmp)
        files_result, files_s = timed(evaluate_widerface, tmp, args.gt)
    memory_result, memory_s = timed(evaluate_widerface, predictions, gt)
    assert all(abs(files_result[s] - memory_result[s]) < 1e-6 for s in ("easy", "medium", "hard"))

    rows = [
        ("load ground truth (.mat)", load_s),
        ("parse 3,226 prediction files", parse_s),
        ("protocol only (mapping, GT loaded)", memory_s),
        ("end to end from files", files_s),
    ]
    faces = sum(len(b) for b in gt.boxes)
    print(f"WIDER val: {len(gt.images)} images, {faces} faces, {PER_IMAGE} predictions per image")
    print(f"{'step':<38}{'wall s':>8}{'CPU s':>8}")
    for name, (wall, cpu) in rows:
        print(f"{name:<38}{wall:>8.2f}{cpu:>8.2f}")
    print("AP (synthetic): " + " / ".join(f"{s} {files_result[s]:.4f}" for s in ("easy", "medium", "hard")))

    report = {
        "benchmark": "featherface.eval.evaluate_widerface, full WIDER val, synthetic predictions",
        "images": len(gt.images),
        "faces": faces,
        "predictions_per_image": PER_IMAGE,
        "seconds": {name: {"wall": round(wall, 3), "cpu": round(cpu, 3)} for name, (wall, cpu) in rows},
        "load_average": os.getloadavg(),
        "ap": {s: files_result[s] for s in ("easy", "medium", "hard")},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "numpy": np.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

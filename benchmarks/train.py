"""Training throughput: images/s of one optimiser step for V2 alone and V2 distilled from V1.

A batch of real WIDER FACE training images (``widerface_train1000``) is augmented once to the
training size; then whole steps of the training loop (forward, teacher forward, matching, loss,
backward, AdamW) are timed on it, so data loading is excluded (it is reported separately).

    .venv/bin/python benchmarks/train.py [--size 640] [--batch 8] [--steps 3] [--device cpu]
        [--out runs/benchmarks/train.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from featherface import featherface_v1, featherface_v2
from featherface.training import LabeledFaceDataset, TrainAugment, collate, make_loader
from featherface.training.labels import read_retinaface_labels
from featherface.training.loop import TrainConfig, Trainer
from featherface.training.losses import DetectionObjective

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def timed(fn, *args):
    """``fn(*args)`` and its (wall, CPU) seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn(*args)
    return value, (time.perf_counter() - wall, time.process_time() - cpu)


def step_rate(trainer: Trainer, batch, steps: int) -> dict[str, float]:
    """Seconds per step (median over ``steps`` after one warm-up step) and images per second."""
    trainer.train_step(batch)
    walls, cpus = [], []
    for _ in range(steps):
        _, (wall, cpu) = timed(trainer.train_step, batch)
        walls.append(wall)
        cpus.append(cpu)
    wall, cpu = sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]
    images = len(batch.targets)
    return {"step_s": wall, "step_cpu_s": cpu, "images_per_s": images / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "widerface_train1000")
    parser.add_argument("--teacher", type=Path, default=SHARED / "weights" / "featherface_v1_widerface.pth")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (median reported)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "benchmarks" / "train.json")
    args = parser.parse_args()

    labels = read_retinaface_labels(args.data / "label.txt")[: args.batch]
    dataset = LabeledFaceDataset(labels, TrainAugment(args.size))
    samples, (data_wall, _) = timed(lambda: [dataset[i] for i in range(len(dataset))])
    batch = collate(samples)
    loader = make_loader(dataset, args.batch)
    config = TrainConfig(epochs=1, device=args.device, progress=False)
    torch.manual_seed(0)
    teacher = featherface_v1(checkpoint_path=args.teacher)
    cases = {
        "train featherface_v2": Trainer(featherface_v2(), loader, config),
        "distill featherface_v1 -> featherface_v2": Trainer(
            featherface_v2(), loader, config, DetectionObjective(), teacher
        ),
    }
    results = {name: step_rate(trainer, batch, args.steps) for name, trainer in cases.items()}

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(
        f"{args.size}×{args.size}, batch {args.batch}, {args.device} ({device}), "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'case':<44}{'s/step':>8}{'CPU s':>8}{'images/s':>10}")
    for name, r in results.items():
        print(f"{name:<44}{r['step_s']:>8.2f}{r['step_cpu_s']:>8.2f}{r['images_per_s']:>10.2f}")
    print(f"{'data: read + augment (1 process)':<44}{data_wall:>8.2f}{'':>8}{args.batch / data_wall:>10.2f}")

    report = {
        "benchmark": "featherface training step (forward, loss, backward, AdamW) on real images",
        "image_size": args.size,
        "batch_size": args.batch,
        "device": args.device,
        "device_name": device,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "steps_timed": args.steps,
        "results": results,
        "data_images_per_s": args.batch / data_wall,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Per-stage latency of FaceDetector: preprocess / forward / decode+NMS, V1 and V2, batch 1 and 8.

    python benchmarks/detector.py [--runs 20] [--threads 2] [--json runs/benchmarks/detector.json]

Input: a real photo resized to 640×480. Prints a table (median ms per batch) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import cv2
import torch

from featherface import FaceDetector, create_model
from featherface.weights import WeightsError

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def load_model(name: str) -> tuple[torch.nn.Module, str]:
    if name == "featherface_v1":
        return create_model(
            name, checkpoint_path=SHARED / "weights" / "featherface_v1_widerface.pth"
        ), "widerface"
    try:
        return create_model(name, pretrained=True), "pretrained"
    except WeightsError:
        return create_model(name).eval(), "random init (no pretrained weights yet)"


def time_stages(detector: FaceDetector, images: list, runs: int, warmup: int = 3) -> dict[str, float]:
    samples: dict[str, list[float]] = {"preprocess": [], "forward": [], "decode_nms": [], "total": []}
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        batch = detector.prepare(images)
        t1 = time.perf_counter()
        outputs = detector.infer(batch)
        t2 = time.perf_counter()
        detector.decode(batch, outputs)
        t3 = time.perf_counter()
        if i >= warmup:
            for key, value in zip(samples, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                samples[key].append(value * 1000)
    return {key: statistics.median(values) for key, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=str(ROOT / "runs" / "benchmarks" / "detector.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    photo = cv2.resize(cv2.imread(str(SHARED / "data" / "dlib_faces" / "2008_002470.jpg")), (640, 480))

    rows = []
    for name in ("featherface_v1", "featherface_v2"):
        model, weights = load_model(name)
        detector = FaceDetector(model, device="cpu")
        for batch_size in (1, 8):
            stages = time_stages(detector, [photo] * batch_size, args.runs)
            share = 100 * stages["decode_nms"] / stages["total"]
            rows.append(
                {"model": name, "weights": weights, "batch": batch_size, **stages, "decode_share_pct": share}
            )

    columns = ("batch", "preprocess", "forward", "decode+NMS", "total", "decode %")
    header = f"{'model':<16}" + "".join(f"{c:>12}" for c in columns)
    print(f"FaceDetector stages at 640×480, median ms per batch of {args.runs} runs, {args.threads} threads")
    print(header)
    for r in rows:
        print(
            f"{r['model']:<16}{r['batch']:>12}{r['preprocess']:>12.2f}{r['forward']:>12.2f}"
            f"{r['decode_nms']:>12.2f}{r['total']:>12.2f}{r['decode_share_pct']:>11.1f}%"
        )
    report = {
        "benchmark": "detector_stages",
        "input": "640x480 real photo",
        "runs": args.runs,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

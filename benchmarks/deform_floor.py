"""How fast V1 could get with free deformable sampling: V1 fast against a floor model on CPU.

    python benchmarks/deform_floor.py [--runs 30] [--threads 2] [--json runs/benchmarks/deform_floor.json]

The floor model is the fused V1 (``model.fuse()``) with each of its 15 deformable convs replaced
by a plain 3×3 convolution with the same weights; the offset / mask convolutions still run (the
architecture needs them) but no sampling plan is built and nothing is gathered. No deformable-conv
kernel can beat a dense convolution of the same size, so V1 original-style / floor bounds the
speed-up any kernel could give V1 in eager PyTorch. Timed like ``benchmarks/latency.py``
(network alone, batch 1, real photo, interleaved rounds); prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from featherface import bench, create_model
from featherface.models.dcn import TAPS
from featherface.models.deform import set_deform_impl
from featherface.models.fused import FusedDeformContext, FusedDeformSSH

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CHECKPOINT = SHARED / "weights" / "featherface_v1_widerface.pth"
IMAGE = SHARED / "data" / "dlib_faces" / "2008_002470.jpg"


def _plain_weight(projection: torch.Tensor) -> torch.Tensor:
    """``(C_in, 9·C_out)`` projection matrix → the ``(C_out, C_in, 3, 3)`` conv weight it came from."""
    channels = projection.shape[0]
    return projection.reshape(channels, 3, 3, projection.shape[1] // TAPS).permute(3, 0, 1, 2).contiguous()


class PlainConvSSH(nn.Module):
    """One :class:`FusedDeformSSH` level with plain 3×3 convs in place of its deformable convs."""

    def __init__(self, level: FusedDeformSSH) -> None:
        super().__init__()
        self.level = level
        self.weights = {name: _plain_weight(p.detach()) for name, p in level.projections.items()}

    def conv(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.conv2d(x, self.weights[name], self.level.biases[name], padding=1)

    def activated(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.leaky_relu(self.conv(x, name), self.level.negative_slope, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = self.level
        level.offsets_x(x)
        branch3, shared = self.conv(x, "conv3x3"), self.activated(x, "conv5x5_1")
        level.offsets_s(shared)
        branch5, inner = self.conv(shared, "conv5x5_2"), self.activated(shared, "conv7x7_2")
        level.offsets_t(inner)
        branch7 = self.conv(inner, "conv7x7_3")
        return F.relu(torch.cat((branch3, branch5, branch7), dim=1), inplace=True)


class PlainConvContext(nn.ModuleList):
    """A :class:`FusedDeformContext` whose levels run as :class:`PlainConvSSH`."""

    def __init__(self, context: FusedDeformContext) -> None:
        super().__init__(PlainConvSSH(level) for level in context)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [level(x) for level, x in zip(self, features)]


def v1_models() -> dict[str, nn.Module]:
    """V1 original-style (torchvision deformable conv, unfused), V1 fast and the floor model."""

    def load() -> nn.Module:
        return create_model("featherface_v1", checkpoint_path=CHECKPOINT).eval()

    floor = load().fuse()
    floor.context = PlainConvContext(floor.context)
    return {
        "V1 original-style": set_deform_impl(load(), "torchvision"),
        "V1 fast": load().fuse(),
        "V1 floor (free deformable sampling)": floor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=str(ROOT / "runs" / "benchmarks" / "deform_floor.json"))
    args = parser.parse_args()
    if not (CHECKPOINT.is_file() and IMAGE.is_file()):
        raise SystemExit(f"needs {CHECKPOINT} and {IMAGE}: the shared data folder beside the repository")
    torch.set_num_threads(args.threads)
    image, rows = cv2.imread(str(IMAGE)), []
    for size in bench.DEFAULT_SIZES:
        x = torch.from_numpy(bench.bgr_minus_mean(image, size))
        models = v1_models()  # fresh models per size, as latency.py builds them
        with torch.inference_mode():
            shapes = {tuple(t.shape for t in model(x)) for model in models.values()}
            if len(shapes) != 1:
                raise RuntimeError(f"the models disagree on output shapes: {shapes}")
            runners = [lambda model=model, x=x: model(x) for model in models.values()]
            times = bench.time_interleaved(runners, args.runs, args.warmup)
        for name, t in zip(models, times):
            median = float(np.median(t))
            rows.append({"model": name, "height": size[0], "width": size[1], "median_ms": median})
    machine = bench.machine_info()
    print(f"threads {args.threads}, runs {args.runs}, {machine['cpu']}")
    print("| model | input | median ms | original-style / this |")
    print("|---|---|---:|---:|")
    for row in rows:
        original = next(
            r["median_ms"] for r in rows if r["height"] == row["height"] and r["model"] == "V1 original-style"
        )
        size, median = f"{row['width']}×{row['height']}", row["median_ms"]
        print(f"| {row['model']} | {size} | {median:.1f} | {original / median:.2f}× |")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine, "threads": args.threads, "runs": args.runs, "rows": rows}
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""CUDA check of the fast deformable conv, and GPU latency / throughput of V1 fast and V2 (fp32, fp16).

    python benchmarks/cuda_check.py results.json [--device cuda:0]

Self-contained (random weights unless ``../shared`` holds the V1 checkpoint); finishes in well
under two minutes on one GPU. Writes one JSON object:

- ``deform_parity``: per V1 SSH shape, max |fast − torchvision.ops.deform_conv2d| on CUDA (fp32),
  and the same for the gradients of the input, offsets, mask and weight;
- ``model_parity``: max |V1 fast fused − V1 torchvision unfused| on CUDA at 480×640 (fp32);
- ``latency``: per model, precision, batch: median ms per batch and images/s.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from featherface import featherface_v1, featherface_v2
from featherface.models.dcn import deform_conv3x3
from featherface.models.deform import set_deform_impl

CHECKPOINT = Path(__file__).resolve().parents[2] / "shared" / "weights" / "featherface_v1_widerface.pth"
#: (C_in, C_out, H, W) of V1's deformable convs at 640×480 (levels P3, P4, P5).
SSH_SHAPES = [
    (c_in, c_out, h, w)
    for h, w in ((60, 80), (30, 40), (15, 20))
    for c_in, c_out in ((64, 32), (64, 16), (16, 16))
]


def deform_parity(device: torch.device) -> list[dict]:
    """Fast vs torchvision on random inputs of V1's shapes, values and gradients."""
    rows = []
    gen = torch.Generator(device="cpu").manual_seed(0)
    for c_in, c_out, h, w in SSH_SHAPES:
        tensors = [
            torch.randn(2, c_in, h, w, generator=gen) * 3,
            torch.randn(2, 18, h, w, generator=gen) * 3,
            2 * torch.rand(2, 9, h, w, generator=gen),
            torch.randn(c_out, c_in, 3, 3, generator=gen) * 0.1,
        ]
        outputs, grads = {}, {}
        for impl in ("fast", "torchvision"):
            inputs = [t.to(device).clone().requires_grad_() for t in tensors]
            out = deform_conv3x3(*inputs, impl=impl)
            out.square().mean().backward()
            outputs[impl], grads[impl] = out.detach(), [t.grad for t in inputs]
        rows.append(
            {
                "shape": [c_in, c_out, h, w],
                "max_abs_out": float((outputs["fast"] - outputs["torchvision"]).abs().max()),
                "max_abs_grad": [
                    float((a - b).abs().max()) for a, b in zip(grads["fast"], grads["torchvision"])
                ],
            }
        )
    return rows


def time_model(model: torch.nn.Module, x: torch.Tensor, half: bool, runs: int = 30) -> float:
    """Median milliseconds per forward pass (CUDA events), after warm-up."""
    times = []
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=half):
        for _ in range(5):
            model(x)
        torch.cuda.synchronize()
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="JSON file to write")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device: run it on a GPU machine")
    started = time.time()
    report: dict = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__}
    report["deform_parity"] = deform_parity(device)

    v1 = featherface_v1(checkpoint_path=CHECKPOINT) if CHECKPOINT.is_file() else featherface_v1()
    v1 = v1.eval()
    report["v1_weights"] = "widerface checkpoint" if CHECKPOINT.is_file() else "random initialisation"
    torch.manual_seed(0)
    x = (torch.randn(1, 3, 480, 640) * 50).to(device)
    original = set_deform_impl(copy.deepcopy(v1), "torchvision").to(device)
    fast = v1.fuse(channels_last=False).to(device)
    with torch.inference_mode():
        report["model_parity"] = max(float((a - b).abs().max()) for a, b in zip(original(x), fast(x)))
    models = {
        "v1_original": original,
        "v1_fast": fast,
        "v2": featherface_v2().eval().fuse(channels_last=False).to(device),
    }
    report["latency"] = []
    for name, model in models.items():
        for half in (False, True):
            for batch in (1, 16):
                images = x.expand(batch, -1, -1, -1).contiguous()
                ms = time_model(model, images, half)
                report["latency"].append(
                    {
                        "model": name,
                        "fp16_autocast": half,
                        "batch": batch,
                        "median_ms": ms,
                        "images_per_s": batch * 1e3 / ms,
                    }
                )
    report["seconds"] = time.time() - started
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""``featherface benchmark``: CPU latency of FeatherFace against peer detectors, as a table and JSON."""

from __future__ import annotations

import argparse
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must look like WIDTHxHEIGHT (e.g. 640x480), got {text!r}"
        ) from None
    return height, width


def run(args: argparse.Namespace) -> int:
    """Build the candidates, time them, print the table, write the JSON."""
    import cv2
    import torch

    from featherface import bench

    image = cv2.imread(args.image)
    if image is None:
        raise FileNotFoundError(f"--image {args.image} does not exist or is not an image OpenCV can read")
    torch.set_num_threads(args.threads)
    spec = {
        "checkpoint": args.checkpoint,
        "onnx_dir": str(args.onnx_dir),
        "peers": args.peers,
        "compile": not args.no_compile,
    }
    results = bench.run_benchmark(
        bench.build_candidates(spec), image, tuple(args.sizes), args.runs, args.warmup, args.threads
    )
    if not args.no_memory:
        bench.measure_memory(results, spec, args.image, args.threads)
    settings = {
        "threads": args.threads,
        "runs": args.runs,
        "warmup": args.warmup,
        "image": Path(args.image).name,
    }
    report = bench.Report(results, bench.machine_info(), settings)
    print(bench.format_table(report))
    if args.json:
        bench.write_json(report, args.json)
        print(f"wrote {args.json}")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    from featherface.bench import default_onnx_dir

    parser = commands.add_parser("benchmark", help="CPU latency of FeatherFace and peer detectors")
    parser.add_argument("--image", required=True, help="a real photo to build the inputs from")
    parser.add_argument("--checkpoint", default=None, help="V1 weights (default: the pretrained weights)")
    parser.add_argument("--peers", default=None, help="folder with the peer ONNX files (optional)")
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=_size,
        default=[(480, 640), (240, 320)],
        help="WIDTHxHEIGHT (default: 640x480 320x240)",
    )
    parser.add_argument("--runs", type=int, default=30, help="timed runs per model and size (default: 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first (default: 5)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every runtime (default: 2)")
    parser.add_argument(
        "--onnx-dir", type=Path, default=default_onnx_dir(), help="where exported models are kept"
    )
    parser.add_argument("--json", default=None, help="write the results here as JSON")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-model peak-memory processes")
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="leave out the torch.compile rows (each compiles once per size: about a minute on 2 cores)",
    )
    parser.set_defaults(handler=run)

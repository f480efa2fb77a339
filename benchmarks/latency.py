"""CPU latency of FeatherFace V1 (original-style and fast), V2 and the peer detectors, with target ratios.

Run from the repository root with the shared data folder beside it:

    python benchmarks/latency.py --json benchmarks/latency.json

It times everything side by side (``featherface.bench``), prints the table and the issue's target
ratios, and writes the JSON. ``--update-docs`` rewrites the table in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import cv2
import torch

from featherface import bench

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IMAGE = SHARED / "data" / "dlib_faces" / "2008_002470.jpg"
TABLE_START, TABLE_END = "<!-- latency table start -->", "<!-- latency table end -->"


def target_lines(report: bench.Report) -> list[str]:
    """The issue's targets as measured ratios, per input height."""
    lines = []
    for height in sorted({r.height for r in report.results}, reverse=True):
        size = next(f"{r.width}×{r.height}" for r in report.results if r.height == height)
        fast = report.ratio("FeatherFace-V1 original pytorch", "FeatherFace-V1 fast pytorch", height)
        lines.append(f"- {size}: V1 fast vs V1 original-style (eager): {fast:.2f}× faster (target ≥ 5×)")
        v2 = report.ratio("FeatherFace-V1 fast pytorch", "FeatherFace-V2 pytorch", height)
        lines.append(f"- {size}: V2 eager vs V1 fast eager: {v2:.2f}× faster (target ≥ 2×)")
        try:
            original, compiled = "FeatherFace-V1 original pytorch", "FeatherFace-V1 fast torch.compile"
            fast = report.ratio(original, compiled, height)
            v2 = report.ratio(compiled, "FeatherFace-V2 torch.compile", height)
            lines.append(f"- {size}: V1 fast compiled vs V1 original-style (eager): {fast:.2f}× faster")
            lines.append(f"- {size}: V2 compiled vs V1 fast compiled: {v2:.2f}× faster")
        except KeyError:
            pass
        try:
            peer = 1 / report.ratio("RetinaFace-mnet0.25 onnxruntime", "FeatherFace-V2 onnxruntime", height)
            lines.append(
                f"- {size}: V2 ONNX Runtime / RetinaFace-mnet0.25 ONNX Runtime: {peer:.2f} (target ≤ 1.0)"
            )
        except KeyError:
            lines.append(f"- {size}: RetinaFace-mnet0.25 not found, no peer ratio")
    return lines


def measure(args: argparse.Namespace) -> bench.Report:
    """Time every candidate side by side (and their peak memory unless ``--no-memory``)."""
    if not IMAGE.is_file():
        raise SystemExit(f"needs {IMAGE}: the shared data folder beside the repository")
    torch.set_num_threads(args.threads)
    checkpoint = SHARED / "weights" / "featherface_v1_widerface.pth"
    spec = {
        "checkpoint": str(checkpoint),
        "onnx_dir": str(bench.default_onnx_dir()),
        "peers": str(SHARED / "peers"),
        "compile": not args.no_compile,
    }
    image = cv2.imread(str(IMAGE))
    results = bench.run_benchmark(
        bench.build_candidates(spec), image, bench.DEFAULT_SIZES, args.runs, args.warmup, args.threads
    )
    if not args.no_memory:
        bench.measure_memory(results, spec, str(IMAGE), args.threads)
    settings = {"threads": args.threads, "runs": args.runs, "warmup": args.warmup, "image": IMAGE.name}
    return bench.Report(results, bench.machine_info(), settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    parser.add_argument("--update-docs", action="store_true", help="rewrite the table in docs/benchmarks.md")
    parser.add_argument("--from-json", default=None, help="print / document a saved run instead of measuring")
    args = parser.parse_args()
    report = bench.read_json(args.from_json) if args.from_json else measure(args)
    table = bench.format_table(report)
    targets = "\n".join(target_lines(report))
    print(table, "", targets, sep="\n")
    if args.json:
        bench.write_json(report, args.json)
    if args.update_docs:
        update_docs(report, table, targets)


def update_docs(report: bench.Report, table: str, targets: str) -> None:
    """Replace (or append) the marked results block of docs/benchmarks.md."""
    docs = REPO / "docs" / "benchmarks.md"
    machine = ", ".join(f"{k} {v}" for k, v in report.machine.items())
    settings = ", ".join(f"{k} {v}" for k, v in report.settings.items())
    block = f"{TABLE_START}\nMachine: {machine}; {settings}.\n\n{table}\n\nTargets:\n\n{targets}\n{TABLE_END}"
    text = docs.read_text()
    pattern = re.compile(re.escape(TABLE_START) + ".*" + re.escape(TABLE_END), re.S)
    docs.write_text(
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )


if __name__ == "__main__":
    main()

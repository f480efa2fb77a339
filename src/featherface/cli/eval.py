"""``featherface eval widerface``: score WIDER FACE predictions with the official protocol."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path("runs") / "eval" / "widerface"


def _to_json(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {key: _to_json(item) for key, item in value.items()}
    return value


def _print_table(result: dict) -> None:
    print(f"{'setting':<8}{'AP':>8}{'faces':>8}")
    for setting in ("easy", "medium", "hard"):
        print(f"{setting:<8}{result[setting]:>8.4f}{result['num_faces'][setting]:>8}")


def _score(predictions: Path, gt: Path, out: Path, iou: float) -> dict:
    from featherface.eval import evaluate_widerface

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_widerface(predictions, gt, iou_threshold=iou)
    for warning in caught:
        print(f"featherface eval: warning: {warning.message}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    report = {"predictions": str(predictions), "gt": str(gt), **_to_json(result)}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    return result


def _save_plots(result: dict, out: Path) -> str:
    from featherface.eval.plot import save_pr_curves

    try:
        paths = save_pr_curves(result, out)
    except ImportError:
        return "PR-curve PNGs need matplotlib: pip install 'featherface[plot]'"
    return "wrote " + ", ".join(str(path) for path in paths)


def run(args: argparse.Namespace) -> int:
    """Score an official-layout prediction folder; print the AP table, write JSON and PR curves."""
    try:
        result = _score(args.predictions, args.gt, args.out, args.iou)
    except ImportError as error:
        raise RuntimeError(str(error)) from error
    _print_table(result)
    print(f"wrote {args.out / 'results.json'}")
    print(_save_plots(result, args.out))
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("eval", help="evaluate detections on a benchmark (WIDER FACE)")
    benchmarks = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    wider = benchmarks.add_parser(
        "widerface",
        help="official WIDER FACE protocol: easy / medium / hard AP",
        description="Score prediction files in the official layout (<event>/<image>.txt) against the "
        "official ground truth (wider_face_val.mat, wider_{easy,medium,hard}_val.mat).",
    )
    wider.add_argument("--predictions", type=Path, required=True, help="folder of <event>/<image>.txt files")
    wider.add_argument(
        "--gt", type=Path, required=True, help="folder with the official wider_*_val.mat files"
    )
    wider.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder for results.json and PR curves (default: {DEFAULT_OUT})",
    )
    wider.add_argument("--iou", type=float, default=0.5, help="IoU threshold (default: 0.5)")
    wider.set_defaults(handler=run)

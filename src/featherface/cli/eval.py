"""``featherface eval widerface``: the official WIDER FACE protocol on prediction files or a detector."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

DEFAULT_OUT = Path("runs") / "eval" / "widerface"
MODEL_OPTIONS = ("checkpoint", "images", "input_size", "device")


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


def _check_options(args: argparse.Namespace) -> None:
    if args.model is None:
        given = [f"--{name.replace('_', '-')}" for name in MODEL_OPTIONS if getattr(args, name) is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} only apply with --model; --predictions scores existing files"
            )
    elif args.images is None:
        raise ValueError("--model needs --images: the WIDER images folder (<event>/<image>.jpg)")


class _ProgressBar:
    """A ``progress(done, total)`` callback drawing a progress bar over the images."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc="detect", unit="img")
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()


def _predict(args: argparse.Namespace) -> Path:
    """Run the detector over ``--images`` and write prediction files under ``--out/predictions``."""
    from featherface.detector import FaceDetector
    from featherface.eval.predict import WIDERFACE_DETECTOR_SETTINGS, predict_widerface

    detector = FaceDetector(
        args.model,
        checkpoint_path=args.checkpoint,
        device=args.device,
        input_size=args.input_size,
        **WIDERFACE_DETECTOR_SETTINGS,
    )
    predictions = args.out / "predictions"
    predict_widerface(detector, args.images, predictions, args.batch_size, progress=_ProgressBar())
    print(f"wrote prediction files to {predictions}")
    return predictions


def _score(predictions: Path, args: argparse.Namespace) -> dict:
    from featherface.eval import evaluate_widerface

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_widerface(predictions, args.gt, iou_threshold=args.iou)
    for warning in caught:
        print(f"featherface eval: warning: {warning.message}", file=sys.stderr)
    run = {"predictions": str(predictions), "gt": str(args.gt)}
    if args.model is not None:
        run.update(
            model=args.model, checkpoint=args.checkpoint and str(args.checkpoint), input_size=args.input_size
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({**run, **_to_json(result)}, indent=2) + "\n")
    return result


def _save_plots(result: dict, out: Path, label: str) -> str:
    from featherface.eval.plot import save_pr_curves

    try:
        paths = save_pr_curves(result, out, label=label)
    except ImportError:
        return "PR-curve PNGs need matplotlib: pip install 'featherface[plot]'"
    return "wrote " + ", ".join(str(path) for path in paths)


def run(args: argparse.Namespace) -> int:
    """Score prediction files (after running ``--model`` when given): AP table, JSON and PR curves."""
    _check_options(args)
    try:
        predictions = args.predictions if args.model is None else _predict(args)
        result = _score(predictions, args)
    except ImportError as error:
        raise RuntimeError(str(error)) from error
    _print_table(result)
    print(f"wrote {args.out / 'results.json'}")
    print(_save_plots(result, args.out, args.model or predictions.name))
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("eval", help="evaluate detections on a benchmark (WIDER FACE)")
    benchmarks = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    wider = benchmarks.add_parser(
        "widerface",
        help="official WIDER FACE protocol: easy / medium / hard AP",
        description="Score prediction files in the official layout (<event>/<image>.txt), or run a detector "
        "over the WIDER images first (score > 0.02, NMS 0.4, top 750), against the official ground truth "
        "(wider_face_val.mat, wider_{easy,medium,hard}_val.mat).",
    )
    source = wider.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, help="folder of <event>/<image>.txt files to score")
    source.add_argument("--model", help="detector to run first, e.g. featherface_v1 (pretrained weights)")
    wider.add_argument(
        "--gt", type=Path, required=True, help="folder with the official wider_*_val.mat files"
    )
    wider.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder for results.json, PR curves and --model's predictions/ (default: {DEFAULT_OUT})",
    )
    wider.add_argument("--iou", type=float, default=0.5, help="IoU threshold (default: 0.5)")
    model = wider.add_argument_group("with --model")
    model.add_argument("--checkpoint", type=Path, help="weights file (.safetensors or legacy .pth)")
    model.add_argument("--images", type=Path, help="WIDER images folder: <event>/<image>.jpg")
    model.add_argument("--input-size", type=int, help="cap the long side in pixels (default: original size)")
    model.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA if available)")
    model.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    wider.set_defaults(handler=run)

"""The training curve of one or more consecutive runs: loss and WIDER FACE AP per epoch.

    python recipes/training_curve.py runs/featherface_v2_widerface_kd/stage1 \
        runs/featherface_v2_widerface_kd/stage2 --model featherface_v2 \
        --images ../shared/data/widerface_val_dev/images --gt ../shared/data/widerface_val_dev/gt \
        --out runs/featherface_v2_widerface_kd/curve

Each RUN is a ``featherface train`` / ``distill`` output folder: its ``log.jsonl`` gives the loss
per epoch and its per-epoch weights (``--save-every``, ``epochs/epoch_NNN.safetensors``, plus the
final ``model.safetensors``) are evaluated with the official protocol (score 0.02, NMS 0.4, top
750, original size). Later runs continue the epoch count of earlier ones. Writes ``curve.json``,
prints a table, and draws ``curve.png`` when matplotlib is installed. ``--reuse`` takes the AP of
an earlier ``curve.json`` for the same run folder and epoch instead of evaluating again, so a
curve grows by the new run's evaluations only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from featherface import FaceDetector
from featherface.eval import evaluate_widerface
from featherface.eval.predict import WIDERFACE_DETECTOR_SETTINGS, predict_widerface
from featherface.training.logs import read_log
from featherface.training.loop import EPOCH_WEIGHTS
from featherface.weights import EXPORT_WEIGHTS_FILE

SETTINGS = ("easy", "medium", "hard")


def epoch_weights(run: Path, epoch: int, last_epoch: int) -> Path | None:
    """The weights ``--save-every`` kept for ``epoch`` (the final export for the last), if any."""
    saved = run / EPOCH_WEIGHTS.format(epoch=epoch)
    if saved.is_file():
        return saved
    final = run / EXPORT_WEIGHTS_FILE
    return final if epoch == last_epoch and final.is_file() else None


def evaluate(model: str, weights: Path, images: Path, gt: Path, device: str | None) -> dict[str, float]:
    detector = FaceDetector(model, checkpoint_path=weights, device=device, **WIDERFACE_DETECTOR_SETTINGS)
    with tempfile.TemporaryDirectory() as tmp:
        predict_widerface(detector, images, Path(tmp) / "predictions")
        result = evaluate_widerface(Path(tmp) / "predictions", gt)
    return {setting: float(result[setting]) for setting in SETTINGS}


def reusable_ap(curve: Path) -> dict[tuple[str, int], dict[str, float]]:
    """``(run folder, epoch of that run) → AP per setting`` from an earlier ``curve.json``."""
    rows = json.loads(curve.read_text())
    first_epoch = {}
    for row in rows:
        first_epoch.setdefault(row["run"], row["epoch"])
    return {
        (row["run"], row["epoch"] - first_epoch[row["run"]] + 1): {s: row[s] for s in SETTINGS}
        for row in rows
        if all(s in row for s in SETTINGS)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training output folders, in training order")
    parser.add_argument("--model", required=True, help="architecture of the weights, e.g. featherface_v2")
    parser.add_argument("--images", required=True, type=Path, help="WIDER FACE images (<event>/<image>.jpg)")
    parser.add_argument("--gt", required=True, type=Path, help="folder of the official wider_*_val.mat files")
    parser.add_argument("--out", required=True, type=Path, help="folder for curve.json and curve.png")
    parser.add_argument("--device", help="cpu, cuda, … (default: CUDA when available)")
    parser.add_argument("--reuse", type=Path, help="an earlier curve.json whose AP values to take over")
    args = parser.parse_args()
    earlier = reusable_ap(args.reuse) if args.reuse else {}

    rows, offset = [], 0
    for run in args.runs:
        epochs = {r["epoch"]: r for r in read_log(run / "log.jsonl") if r["kind"] == "epoch"}
        if not epochs:
            raise SystemExit(f"{run / 'log.jsonl'} has no finished epoch")
        for epoch, record in sorted(epochs.items()):
            row = {"run": str(run), "epoch": offset + epoch, "loss": record["loss"]}
            weights = epoch_weights(run, epoch, max(epochs))
            if (str(run), epoch) in earlier:
                row.update(earlier[str(run), epoch])
            elif weights is not None:
                row.update(evaluate(args.model, weights, args.images, args.gt, args.device))
            rows.append(row)
            ap = " ".join(f"{row[s]:.4f}" if s in row else "  -   " for s in SETTINGS)
            print(f"{row['epoch']:4d}  loss {row['loss']:8.4f}  AP {ap}  {run.name}", flush=True)
        offset += max(epochs)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "curve.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out / 'curve.json'}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, (loss_axis, ap_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot([r["epoch"] for r in rows], [r["loss"] for r in rows])
    loss_axis.set(xlabel="epoch", ylabel="training loss", title="loss")
    for setting in SETTINGS:
        points = [(r["epoch"], r[setting]) for r in rows if setting in r]
        ap_axis.plot(*zip(*points), marker="o", label=setting)
    ap_axis.set(xlabel="epoch", ylabel="AP", title="WIDER FACE AP")
    ap_axis.legend()
    figure.tight_layout()
    figure.savefig(args.out / "curve.png", dpi=100)
    print(f"wrote {args.out / 'curve.png'}")


if __name__ == "__main__":
    main()

"""Options shared by ``featherface train`` and ``featherface distill``: data, schedule, output."""

from __future__ import annotations

import argparse
import json

from torch.utils.data import DataLoader

from featherface.training.augment import (
    CROP_SCALES,
    MAX_CROP_SCALE,
    PadResize,
    TrainAugment,
    check_crop_scales,
)
from featherface.training.data import FaceDataset, ImageFolderDataset, LabeledFaceDataset, make_loader
from featherface.training.distributed import world_from_env
from featherface.training.losses import LOSS_TERMS


def _loss_weight(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or name not in LOSS_TERMS:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with NAME one of {', '.join(LOSS_TERMS)}, got {text!r}"
        )
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number") from None


def parse_crop_scales(text: str) -> tuple[float, ...]:
    """``"0.3,0.45,1.5"`` → ``(0.3, 0.45, 1.5)``; an :class:`argparse.ArgumentTypeError` names a bad list."""
    try:
        scales = tuple(float(value) for value in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0.3,0.45,0.6,0.8,1.0,1.5,2.0, got {text!r}"
        ) from None
    try:
        return check_crop_scales(scales)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"crop scales are fractions of the short side in (0, {MAX_CROP_SCALE:g}], got {text!r}"
        ) from None


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Register the data, schedule and output options on ``parser``."""
    data = parser.add_argument_group("data")
    data.add_argument("--images", required=True, help="image folder (the root of the paths in --labels)")
    data.add_argument(
        "--labels",
        help="RetinaFace label.txt or official wider_face_*_bbx_gt.txt; without it every image under "
        "--images is used unlabelled (distillation only: the teacher labels them)",
    )
    data.add_argument("--image-size", type=int, default=640, help="square training size in pixels (640)")
    data.add_argument("--batch-size", type=int, default=32, help="images per step and process (32)")
    data.add_argument("--workers", type=int, default=2, help="data loading processes (2)")
    data.add_argument("--no-augment", action="store_true", help="only pad and resize (no crop/colour/flip)")
    data.add_argument(
        "--whole-image",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of training on the whole image padded to a square instead of a random crop: "
        "faces as small as in full-size photos (0)",
    )
    data.add_argument(
        "--crop-scales",
        type=parse_crop_scales,
        default=CROP_SCALES,
        metavar="S,S,...",
        help="crop sides as fractions of the short side, one drawn per image; above 1 zooms out, "
        f"padding with the mean colour (SCRFD) ({','.join(f'{s:g}' for s in CROP_SCALES)})",
    )
    data.add_argument(
        "--blank",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of replacing an image by a faceless black, dark or one-colour frame; they "
        "teach through the distillation terms, so distill only (0)",
    )
    data.add_argument(
        "--degrade",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of blurring, shrinking and re-enlarging, adding noise to or JPEG-compressing "
        "an image after resizing, as hard faces look (0)",
    )
    run = parser.add_argument_group("schedule")
    run.add_argument("--epochs", type=int, required=True)
    run.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (1e-3)")
    run.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up length (1)")
    run.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (0.01)")
    run.add_argument("--ema", action="store_true", help="keep and export an EMA of the weights")
    run.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision (CUDA)"
    )
    run.add_argument("--mixup", type=float, default=0.0, help="per-image MixUp probability (0)")
    run.add_argument("--cutmix", type=float, default=0.0, help="per-image CutMix probability (0)")
    run.add_argument(
        "--mosaic", type=float, default=0.0, help="per-image probability of a 2×2 half-size mosaic (0)"
    )
    run.add_argument(
        "--dropblock", type=float, default=0.0, help="DropBlock probability on neck features (0)"
    )
    run.add_argument(
        "--loss-weight",
        type=_loss_weight,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"weight of a loss term, repeatable; terms: {', '.join(LOSS_TERMS)}",
    )
    run.add_argument(
        "--face-balance",
        type=float,
        default=0.0,
        metavar="G",
        help="weigh each positive prior of the ground-truth terms by (1 / priors of its face)^G: "
        "0 every prior counts once, 1 every face, small or large, counts once (0)",
    )
    run.add_argument(
        "--init-body", metavar="PATH", help="initialise the body from this checkpoint (distill: or teacher)"
    )
    run.add_argument(
        "--freeze-bn",
        action="store_true",
        help="keep batch-norm statistics fixed (fine-tuning with small batches, e.g. on a CPU)",
    )
    run.add_argument(
        "--freeze-body",
        action="store_true",
        help="keep the backbone fixed (weights and batch-norm statistics); train the rest",
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", help="cpu, cuda, cuda:1 … (default: CUDA when available)")
    out = parser.add_argument_group("output")
    out.add_argument(
        "--output", required=True, help="folder for log.jsonl, checkpoints/ and model.safetensors"
    )
    out.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoints/last.pt")
    out.add_argument(
        "--save-every",
        type=int,
        default=0,
        metavar="N",
        help="also write the weights every N epochs to OUTPUT/epochs/epoch_NNN.safetensors (0: off)",
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_loader(args: argparse.Namespace) -> DataLoader:
    """The dataset named by ``--labels`` / ``--images`` with the training transform, in a loader."""
    transform = (
        PadResize(args.image_size)
        if args.no_augment
        else TrainAugment(
            args.image_size,
            whole_image=args.whole_image,
            blank=args.blank,
            crop_scales=args.crop_scales,
            degrade=args.degrade,
        )
    )
    dataset: FaceDataset
    if args.labels:
        dataset = LabeledFaceDataset.from_file(args.labels, args.images, transform, seed=args.seed)
    else:
        dataset = ImageFolderDataset(args.images, transform, seed=args.seed)
    return make_loader(dataset, args.batch_size, num_workers=args.workers, seed=args.seed)


def loop_options(args: argparse.Namespace) -> dict[str, object]:
    """Keyword arguments shared by :func:`featherface.training` and :func:`featherface.distill`."""
    return {
        "epochs": args.epochs,
        "lr": args.lr,
        "warmup_epochs": args.warmup_epochs,
        "weight_decay": args.weight_decay,
        "loss_weights": dict(args.loss_weight),
        "face_balance": args.face_balance,
        "device": args.device,
        "amp": args.amp,
        "ema": args.ema,
        "output_dir": args.output,
        "resume": args.resume,
        "seed": args.seed,
        "mixup": args.mixup,
        "cutmix": args.cutmix,
        "mosaic": args.mosaic,
        "dropblock": args.dropblock,
        "progress": not args.no_progress,
        "save_every": args.save_every,
        "freeze_bn": args.freeze_bn,
        "freeze_body": args.freeze_body,
    }


def report(history: list[dict[str, float]], output: str) -> None:
    """Print the first and last epoch summaries and where the weights went (rank 0 only)."""
    if world_from_env()[0] != 0 or not history:
        return
    for record in (history[0], history[-1]) if len(history) > 1 else history:
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in record.items()}))
    print(f"weights: {output}/model.safetensors (+ config.json); log: {output}/log.jsonl")

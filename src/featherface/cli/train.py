"""``featherface train``: train a detector on labelled faces."""

from __future__ import annotations

import argparse

from featherface.cli.training_options import add_training_options, build_loader, loop_options, report
from featherface.factory import create_model
from featherface.training.api import train
from featherface.training.checkpoint import seed_everything
from featherface.training.student import load_body


def run(args: argparse.Namespace) -> int:
    """Build the model and data from ``args``, train, export; returns the exit status."""
    if not args.labels:
        raise ValueError(
            "train needs --labels (label.txt or wider_face_*_bbx_gt.txt); unlabelled images need distill"
        )
    if args.blank:
        raise ValueError(
            "--blank needs a teacher: a faceless frame has no positive priors, and the ground-truth "
            "loss mines negatives per positive, so only distillation learns from it (use distill)"
        )
    seed_everything(args.seed)
    model = create_model(args.model, checkpoint_path=args.checkpoint)
    if args.init_body:
        load_body(model, args.init_body)
    history = train(model, build_loader(args), **loop_options(args))
    report(history, args.output)
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train a detector on labelled faces",
        description="Train with the RetinaFace MultiBox loss. Multi-GPU: torchrun --nproc_per_node N -m "
        "featherface train ...",
    )
    parser.add_argument("--model", required=True, help="architecture to train, e.g. featherface_v2")
    parser.add_argument(
        "--checkpoint", help="start from these weights (.safetensors, .pth or an export folder)"
    )
    add_training_options(parser)
    parser.set_defaults(handler=run)

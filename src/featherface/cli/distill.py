"""``featherface distill``: train a student from a frozen teacher (and labels, when given)."""

from __future__ import annotations

import argparse

from featherface.cli.training_options import add_training_options, build_loader, loop_options, report
from featherface.factory import create_model
from featherface.models.registry import resolve_name
from featherface.training.api import distill
from featherface.training.checkpoint import seed_everything
from featherface.training.losses import KD_CLS_NORMS
from featherface.training.student import load_body


def _teacher(name: str, checkpoint: str | None):
    if checkpoint is None:
        model_cfg, tag = resolve_name(name)
        if model_cfg.weights_cfg(tag) is None:
            raise ValueError(f"teacher {name} has no pretrained weights: pass --teacher-checkpoint PATH")
        return create_model(name, pretrained=True)
    return create_model(name, checkpoint_path=checkpoint)


def run(args: argparse.Namespace) -> int:
    """Build teacher, student and data from ``args``, distill, export; returns the exit status."""
    seed_everything(args.seed)
    teacher = _teacher(args.teacher, args.teacher_checkpoint)
    student = create_model(args.student, checkpoint_path=args.student_checkpoint)
    if args.init_body:
        load_body(student, teacher if args.init_body == "teacher" else args.init_body)
    history = distill(
        teacher,
        student,
        build_loader(args),
        temperature=args.temperature,
        alpha=args.alpha,
        teacher_conf_threshold=args.teacher_conf_threshold,
        kd_cls_norm=args.kd_cls_norm,
        pseudo_label_threshold=args.pseudo_label_threshold,
        **loop_options(args),
    )
    report(history, args.output)
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "distill",
        help="knowledge distillation from a teacher into a student",
        description="Distill a frozen teacher into a student. Without --labels the teacher's detections "
        "label the images. Multi-GPU: torchrun --nproc_per_node N -m featherface distill ...",
    )
    parser.add_argument("--teacher", required=True, help="teacher model, e.g. featherface_v1[.widerface]")
    parser.add_argument("--teacher-checkpoint", help="teacher weights (default: its pretrained weights)")
    parser.add_argument("--student", required=True, help="student architecture, e.g. featherface_v2")
    parser.add_argument("--student-checkpoint", help="start the student from these weights")
    parser.add_argument("--temperature", type=float, default=4.0, help="softening of class distributions (4)")
    parser.add_argument(
        "--alpha", type=float, default=0.7, help="weight of distillation vs ground truth (0.7)"
    )
    parser.add_argument(
        "--teacher-conf-threshold", type=float, default=0.5, help="teacher score for box/landmark KD (0.5)"
    )
    parser.add_argument(
        "--kd-cls-norm",
        choices=KD_CLS_NORMS,
        default="priors",
        help="class KD: one mean over all priors; foreground and background means added (balanced); "
        "or balanced with the student's false positives as a third mean (false_positives) (priors)",
    )
    parser.add_argument(
        "--pseudo-label-threshold",
        type=float,
        default=0.5,
        help="teacher score for pseudo ground truth (0.5)",
    )
    add_training_options(parser)
    parser.set_defaults(handler=run)

"""The public entry points: :func:`train` and :func:`distill`, one loop underneath."""

from __future__ import annotations

import os
from collections.abc import Mapping

from torch import nn
from torch.utils.data import DataLoader

from featherface.training.loop import TrainConfig, Trainer
from featherface.training.losses import DetectionObjective, resolve_loss_weights

PathLike = str | os.PathLike


def train(
    model: nn.Module,
    loader: DataLoader,
    *,
    epochs: int,
    lr: float = 1e-3,
    warmup_epochs: float = 1.0,
    weight_decay: float = 0.01,
    loss_weights: Mapping[str, float] | None = None,
    face_balance: float = 0.0,
    device: str | None = None,
    amp: bool | None = None,
    ema: bool = False,
    output_dir: PathLike | None = None,
    resume: bool | PathLike | None = None,
    **options: object,
) -> list[dict[str, float]]:
    """Train a detector on labelled faces with the RetinaFace MultiBox loss.

    Args:
        model: a detector returning ``(loc (B, P, 4), conf (B, P, 2), landms (B, P, 10))``; trained in
            place and left in eval mode (with the EMA weights when ``ema=True``).
        loader: yields :class:`~featherface.training.data.Batch` (see ``make_loader``); every image labelled.
        epochs: passes over the data.
        lr: peak AdamW learning rate, reached after ``warmup_epochs`` of linear warm-up, then cosine
            annealed to ``lr · min_lr_ratio``.
        weight_decay: AdamW weight decay on conv weights.
        loss_weights: weights by term name (``loc``, ``cls``, ``landm``), over the defaults.
        face_balance: in ``[0, 1]``; weighs each positive prior in the ground-truth terms by
            ``(1 / positive priors of its face) ** face_balance``, rescaled to the same total: 0
            counts every prior once (RetinaFace), 1 every face once, so a small face that
            matches one prior weighs as much as a large one that matches thirty.
        device: ``"cpu"``, ``"cuda"``, … (default: CUDA when available). Under ``torchrun`` each
            process takes ``cuda:LOCAL_RANK`` and DistributedDataParallel is used.
        amp: mixed precision (default: on for CUDA, never on the CPU).
        ema: keep an exponential moving average of the weights (``ema_decay``, default 0.9998).
        output_dir: where ``log.jsonl``, ``checkpoints/last.pt`` (every epoch) and the final
            ``model.safetensors`` + ``config.json`` go; ``None`` writes nothing.
        resume: ``True`` to continue from ``output_dir/checkpoints/last.pt``, or a checkpoint path.
        options: further :class:`~featherface.training.loop.TrainConfig` fields: ``grad_clip`` (10),
            ``min_lr_ratio`` (0.01), ``ema_decay``, ``seed`` (0), ``mixup`` / ``cutmix`` / ``mosaic``
            (per-image probabilities, 0), ``dropblock`` (probability on the neck features, 0),
            ``dropblock_size`` (3), ``iou_threshold`` (0.35), ``progress`` (True), ``save_every``
            (0: off; N writes the weights, EMA if enabled, to ``epochs/epoch_NNN.safetensors``
            every N epochs, e.g. for a per-epoch evaluation), ``freeze_bn`` (False: True keeps
            the batch-norm statistics fixed, for fine-tuning with small batches), ``freeze_body``
            (False: True keeps the backbone's weights and batch-norm statistics fixed).

    Returns:
        one record per epoch: ``epoch``, ``step``, mean ``loss`` and terms, ``lr``, ``images``,
        ``seconds``, ``images_per_s``.
    """
    config = TrainConfig(
        epochs=epochs,
        lr=lr,
        warmup_epochs=warmup_epochs,
        weight_decay=weight_decay,
        device=device,
        amp=amp,
        ema=ema,
        output_dir=output_dir,
        resume=resume,
        **options,
    )
    objective = DetectionObjective(resolve_loss_weights(loss_weights), face_balance=face_balance)
    return Trainer(model, loader, config, objective).fit()


def distill(
    teacher: nn.Module,
    student: nn.Module,
    loader: DataLoader,
    *,
    epochs: int,
    lr: float = 1e-3,
    temperature: float = 4.0,
    alpha: float = 0.7,
    warmup_epochs: float = 1.0,
    weight_decay: float = 0.01,
    loss_weights: Mapping[str, float] | None = None,
    teacher_conf_threshold: float = 0.5,
    kd_cls_norm: str = "priors",
    face_balance: float = 0.0,
    pseudo_label_threshold: float = 0.5,
    device: str | None = None,
    amp: bool | None = None,
    ema: bool = False,
    output_dir: PathLike | None = None,
    resume: bool | PathLike | None = None,
    **options: object,
) -> list[dict[str, float]]:
    """Train ``student`` from ground truth and from a frozen ``teacher`` (knowledge distillation).

    The teacher runs in eval mode without gradients on the same (augmented) batch. The loss is
    ``(1 − alpha) · ground-truth loss + alpha · distillation loss``; the distillation terms are the
    KL divergence of class distributions softened by ``temperature`` (× T²), smooth-L1 toward the
    teacher's box and landmark outputs on priors the teacher scores ≥ ``teacher_conf_threshold``,
    and, when ``loss_weights["kd_feat"] > 0``, MSE between the student's neck features (through
    learned 1×1 adapters) and the teacher's. Images without labels (an image folder) take the
    teacher's detections scoring ≥ ``pseudo_label_threshold`` as ground truth. Teacher and
    student must share the prior layout. ``kd_cls_norm="balanced"`` averages the class KL over the
    teacher-confident priors and over the others separately and adds the two means, instead of one
    mean over all priors; ``"false_positives"`` adds a third mean, over the priors matched to no
    labelled face that the student scores ≥ ``teacher_conf_threshold`` and the teacher does not,
    taken out of the background's.

    Other arguments as in :func:`train`; ``loss_weights`` also names ``kd_cls``, ``kd_box``,
    ``kd_landm`` and ``kd_feat``.
    """
    config = TrainConfig(
        epochs=epochs,
        lr=lr,
        warmup_epochs=warmup_epochs,
        weight_decay=weight_decay,
        device=device,
        amp=amp,
        ema=ema,
        output_dir=output_dir,
        resume=resume,
        pseudo_label_threshold=pseudo_label_threshold,
        **options,
    )
    objective = DetectionObjective(
        resolve_loss_weights(loss_weights),
        alpha=alpha,
        temperature=temperature,
        teacher_conf_threshold=teacher_conf_threshold,
        kd_cls_norm=kd_cls_norm,
        face_balance=face_balance,
    )
    return Trainer(student, loader, config, objective, teacher).fit()

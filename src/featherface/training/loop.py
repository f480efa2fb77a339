"""The one training loop behind :func:`featherface.training` and :func:`featherface.distill`.

AdamW with per-step linear warm-up and cosine annealing, gradient clipping, optional EMA, mixed
precision on CUDA, DistributedDataParallel under ``torchrun``, a progress bar per epoch, a JSON-lines
log, an atomic checkpoint after every epoch, exact resume, and a safetensors export at the end.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from featherface.models.registry import InputCfg, PriorCfg
from featherface.priors import prior_boxes
from featherface.training import distributed
from featherface.training.checkpoint import (
    CHECKPOINT_FORMAT,
    export_model,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    save_model_weights,
    seed_everything,
)
from featherface.training.data import Batch, Target
from featherface.training.logs import LOG_FILE, JsonlLog
from featherface.training.losses import GT_TERMS, KD_TERMS, DetectionObjective
from featherface.training.matching import IOU_THRESHOLD, encode_targets
from featherface.training.mix import BatchMix
from featherface.training.optim import ModelEma, adamw, warmup_cosine
from featherface.training.student import TrainableStudent, feature_adapters, neck_channels
from featherface.training.teacher import pseudo_label
from featherface.weights import load_state_dict_strict

CHECKPOINT_PATH = Path("checkpoints") / "last.pt"
#: Where ``save_every`` writes the weights of an epoch, relative to the output folder.
EPOCH_WEIGHTS = "epochs/epoch_{epoch:03d}.safetensors"
#: The start of torch's warning when the schedule steps but the optimiser did not.
SKIPPED_STEP_WARNING = r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`"


@dataclass
class TrainConfig:
    """Settings of a run. Learning rates are per step; epochs may be fractional only for the warm-up."""

    epochs: int
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 10.0
    ema: bool = False
    ema_decay: float = 0.9998
    amp: bool | None = None
    device: str | None = None
    output_dir: str | None = None
    resume: bool | str | None = None
    seed: int = 0
    mixup: float = 0.0
    cutmix: float = 0.0
    mosaic: float = 0.0
    dropblock: float = 0.0
    dropblock_size: int = 3
    iou_threshold: float = IOU_THRESHOLD
    pseudo_label_threshold: float = 0.5
    progress: bool = True
    save_every: int = 0
    freeze_bn: bool = False
    freeze_body: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be non-negative, got {self.warmup_epochs}")
        if self.save_every < 0:
            raise ValueError(f"save_every must be 0 (off) or a number of epochs, got {self.save_every}")
        for name in ("device", "output_dir"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, str(value))
        if self.resume is not None and not isinstance(self.resume, bool):
            self.resume = str(self.resume)


def freeze_batch_norm(model: nn.Module) -> None:
    """Put every batch norm of ``model`` in eval mode: it normalises with its running statistics
    and stops updating them (its scale and shift still train). For fine-tuning with small batches,
    whose own statistics are too noisy."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def freeze_body(model: nn.Module) -> list[nn.Parameter]:
    """Fix ``model.body`` (the MobileNetV1-0.25 backbone of a FeatherFace model): its weights get
    no gradients and its batch norms keep their running statistics; the rest of the model trains.
    For a body that already generalises (e.g. the teacher's) and a training set too narrow to
    improve it. Returns the parameters it froze (those that required gradients)."""
    body = getattr(model, "body", None)
    if not isinstance(body, nn.Module):
        raise ValueError(
            "freeze_body needs a model with a .body backbone (a FeatherFace model), "
            f"got {type(model).__name__}"
        )
    frozen = [param for param in body.parameters() if param.requires_grad]
    body.requires_grad_(False)
    body.eval()
    return frozen


def _input_cfg(model: nn.Module) -> tuple[InputCfg, PriorCfg]:
    cfg = getattr(model, "pretrained_cfg", None)
    return (cfg.input, cfg.priors) if cfg is not None else (InputCfg(), PriorCfg())


class Trainer:
    """One training or distillation run; :meth:`fit` runs it, :meth:`train_step` is one optimiser step.

    ``model`` is trained in place (moved to the run's device). With a ``teacher`` the loss adds the
    distillation terms and unlabelled images get the teacher's detections as ground truth.
    """

    def __init__(
        self,
        model: nn.Module,
        loader: DataLoader,
        config: TrainConfig,
        objective: DetectionObjective | None = None,
        teacher: nn.Module | None = None,
    ) -> None:
        self.config = config
        self.objective = objective or DetectionObjective()
        self.dist = distributed.setup(config.device)
        try:
            self._build(model, loader, teacher)
        except BaseException:
            distributed.teardown(self.dist)
            raise

    def _build(self, model: nn.Module, loader: DataLoader, teacher: nn.Module | None) -> None:
        config = self.config
        self.device = self.dist.device
        self.amp = self.device.type == "cuda" if config.amp is None else config.amp
        if self.amp and self.device.type != "cuda":
            raise ValueError("amp=True needs a CUDA device; mixed precision is not used on the CPU")
        input_cfg, self.prior_cfg = _input_cfg(model)
        if teacher is not None and _input_cfg(teacher) != (input_cfg, self.prior_cfg):
            raise ValueError(
                f"teacher and student expect different inputs or priors ({_input_cfg(teacher)} vs "
                f"{(input_cfg, self.prior_cfg)}); distillation feeds both the same images prior by prior"
            )
        seed_everything(config.seed + self.dist.rank)
        self.model = model.to(self.device).train()
        if config.freeze_bn:
            freeze_batch_norm(self.model)
        self.frozen = freeze_body(self.model) if config.freeze_body else []
        self.teacher = None if teacher is None else teacher.to(self.device).eval().requires_grad_(False)
        adapters = None
        if self.teacher is not None and self.objective.weights["kd_feat"] > 0:
            channels = neck_channels(self.model, self.device), neck_channels(self.teacher, self.device)
            adapters = feature_adapters(*channels).to(self.device)
        self.student = TrainableStudent(self.model, adapters, config.dropblock, config.dropblock_size)
        self.network: nn.Module = self.student
        if self.dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.student, device_ids=device_ids)
        self.loader = distributed.shard_loader(loader, self.dist, config.seed)
        steps_per_epoch = len(self.loader)
        if steps_per_epoch == 0:
            raise ValueError(
                "the data loader yields no batches: the dataset is empty or smaller than one batch"
            )
        self.optimizer = adamw(self.student, config.lr, config.weight_decay)
        self.scheduler = warmup_cosine(
            self.optimizer,
            round(config.warmup_epochs * steps_per_epoch),
            config.epochs * steps_per_epoch,
            config.min_lr_ratio,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.ema = ModelEma(self.model, config.ema_decay) if config.ema else None
        self.mixer = BatchMix(config.mixup, config.cutmix, mosaic=config.mosaic)
        self.mean = torch.tensor(input_cfg.mean, device=self.device).view(1, 3, 1, 1)
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, float]] = []
        self.output_dir = Path(config.output_dir) if config.output_dir is not None else None
        self.log = JsonlLog(self.output_dir / LOG_FILE) if self.output_dir and self.dist.is_main else None
        if config.resume:
            self.resume(self._resume_path())

    def _resume_path(self) -> Path:
        if isinstance(self.config.resume, str):
            return Path(self.config.resume)
        if self.output_dir is None:
            raise ValueError(
                "resume=True needs output_dir (its checkpoints/last.pt is resumed); or pass a path"
            )
        return self.output_dir / CHECKPOINT_PATH

    def _inputs(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, list[Target]]:
        images = batch.images.to(self.device, non_blocking=True)
        if images.dtype == torch.uint8:
            images = images.float() - self.mean
        targets = list(batch.targets)  # stay on the host: matching moves each field in one copy
        if self.mixer.enabled:
            rng = np.random.default_rng((self.config.seed, epoch, self.global_step, self.dist.rank))
            images, targets = self.mixer(images, targets, rng)
        if self.teacher is None and not all(t.labeled for t in targets):
            raise ValueError(
                "the batch holds unlabelled images, which only distillation can use (the teacher labels "
                "them): call distill() with a teacher, or give train() a labelled dataset"
            )
        return images, targets

    def train_step(self, batch: Batch, epoch: int = 0) -> dict[str, float]:
        """One optimiser step on ``batch``; returns every loss term, ``loss`` and the ``lr`` used."""
        images, targets = self._inputs(batch, epoch)
        size = images.shape[-2:]
        priors = prior_boxes(size[0], size[1], self.device, self.prior_cfg)
        teacher_out, teacher_features = None, None
        with torch.autocast(self.device.type, enabled=self.amp):
            if self.teacher is not None:
                with torch.no_grad():
                    if self.student.adapters is not None:
                        teacher_features = self.teacher.forward_neck(images)
                        teacher_out = self.teacher.forward_head(teacher_features)
                    else:
                        teacher_out = self.teacher(images)
            outputs, adapted = self.network(images)
        outputs = tuple(o.float() for o in outputs)
        if outputs[0].shape[1] != priors.shape[0]:
            raise ValueError(
                f"the model predicts {outputs[0].shape[1]} priors for {tuple(size)} images but the prior "
                f"layout has {priors.shape[0]}: the model and its PriorCfg disagree"
            )
        features = None
        if teacher_out is not None:
            teacher_out = tuple(o.float() for o in teacher_out)
            if teacher_out[0].shape != outputs[0].shape:
                raise ValueError(
                    f"teacher predicts {tuple(teacher_out[0].shape)} boxes, student "
                    f"{tuple(outputs[0].shape)}: distillation needs the same priors"
                )
            targets = pseudo_label(
                targets, teacher_out, priors, tuple(size), self.config.pseudo_label_threshold
            )
            if adapted is not None:
                features = ([f.float() for f in adapted], [f.float() for f in teacher_features])
        encoded = encode_targets(targets, priors, tuple(size), self.config.iou_threshold)
        terms = self.objective(outputs, encoded, teacher_out, features)
        # the step's one wait for the device: every term at once
        values = dict(zip(terms, torch.stack([v.detach().float() for v in terms.values()]).tolist()))
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(
                f"the loss became {values['loss']} at step {self.global_step + 1} (terms "
                f"{ {k: round(v, 4) for k, v in values.items()} }); lower lr or check the labels. "
                "The last checkpoint is intact: fix and resume."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["loss"]).backward()
        if self.config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.student.parameters(), self.config.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with warnings.catch_warnings():
            # with mixed precision the scaler skips the optimiser step when float16 gradients
            # overflow (by design, mostly while it calibrates in the first steps); the learning-rate
            # schedule still advances, so torch's warning about the call order does not apply
            warnings.filterwarnings("ignore", SKIPPED_STEP_WARNING, UserWarning)
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.global_step += 1
        return {**values, "lr": lr}

    def _set_epoch(self, epoch: int) -> None:
        for owner in (self.loader.sampler, self.loader.dataset):
            if hasattr(owner, "set_epoch"):
                owner.set_epoch(epoch)

    def fit(self) -> list[dict[str, float]]:
        """Train from the current epoch to ``config.epochs``; returns one summary per epoch."""
        try:
            for epoch in range(self.epoch, self.config.epochs):
                self._run_epoch(epoch)
                self.save()
                self.save_epoch_weights()
            self.finish()
        finally:
            distributed.teardown(self.dist)
        return self.history

    def _run_epoch(self, epoch: int) -> None:
        self._set_epoch(epoch)
        start = time.perf_counter()
        names = ["loss", *GT_TERMS]
        if self.teacher is not None:
            names += [k for k in KD_TERMS if k != "kd_feat" or self.student.adapters is not None]
        sums = torch.zeros(len(names) + 2, dtype=torch.float64)
        bar = tqdm(
            self.loader,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            disable=not (self.config.progress and self.dist.is_main),
            dynamic_ncols=True,
        )
        lr = self.optimizer.param_groups[0]["lr"]
        for batch in bar:
            terms = self.train_step(batch, epoch)
            lr = terms["lr"]
            sums += torch.tensor([terms[k] for k in names] + [1.0, len(batch.targets)], dtype=torch.float64)
            bar.set_postfix(loss=f"{terms['loss']:.4f}", lr=f"{lr:.2e}")
            if self.log is not None:
                self.log.write({"kind": "step", "epoch": epoch + 1, "step": self.global_step, **terms})
        sums = distributed.all_sum(sums.to(self.device), self.dist).cpu()
        steps, images = sums[-2].item(), int(sums[-1].item())
        seconds = time.perf_counter() - start
        record = {"epoch": epoch + 1, "step": self.global_step}
        record.update({k: sums[i].item() / steps for i, k in enumerate(names)})
        record.update({"lr": lr, "images": images, "seconds": seconds, "images_per_s": images / seconds})
        self.history.append(record)
        self.epoch = epoch + 1
        if self.log is not None:
            self.log.write({"kind": "epoch", **record})

    def save(self) -> Path | None:
        """Write ``checkpoints/last.pt`` atomically (rank 0; every rank contributes its RNG state)."""
        if self.output_dir is None:
            return None
        rng = distributed.gather_objects(rng_state(self.device), self.dist)
        if not self.dist.is_main:
            return None
        payload = {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "step": self.global_step,
            "world_size": self.dist.world_size,
            "model": self.model.state_dict(),
            "adapters": None if self.student.adapters is None else self.student.adapters.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "rng": rng,
            "history": self.history,
            "config": asdict(self.config),
        }
        return save_checkpoint(payload, self.output_dir / CHECKPOINT_PATH)

    def save_epoch_weights(self) -> Path | None:
        """Every ``save_every`` epochs, write the weights (the EMA if enabled) to
        ``epochs/epoch_NNN.safetensors`` for a per-epoch evaluation (rank 0)."""
        every = self.config.save_every
        if self.output_dir is None or not every or self.epoch % every or not self.dist.is_main:
            return None
        weights = self.ema.module if self.ema is not None else self.model
        return save_model_weights(weights, self.output_dir / EPOCH_WEIGHTS.format(epoch=self.epoch))

    def resume(self, path: str | os.PathLike) -> None:
        """Continue from a checkpoint written by :meth:`save`: weights, optimiser, schedule, EMA, RNG."""
        payload = load_checkpoint(path)
        load_state_dict_strict(self.model, payload["model"], str(path))
        if (payload["adapters"] is None) != (self.student.adapters is None):
            raise ValueError(
                f"{path} was written {'without' if payload['adapters'] is None else 'with'} feature "
                "distillation (kd_feat); resume with the same loss weights"
            )
        if self.student.adapters is not None:
            self.student.adapters.load_state_dict(payload["adapters"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        if self.ema is not None and payload["ema"] is not None:
            self.ema.load_state_dict(payload["ema"])
        self.epoch, self.global_step = int(payload["epoch"]), int(payload["step"])
        self.history = list(payload["history"])
        rng = payload["rng"]
        if len(rng) == self.dist.world_size:
            restore_rng_state(rng[self.dist.rank], self.device)
        else:
            warnings.warn(
                f"{path} was written by {len(rng)} processes, this run has {self.dist.world_size}: random "
                "streams are re-seeded, so the run continues but not bit for bit",
                stacklevel=2,
            )
            seed_everything(self.config.seed + self.dist.rank + 1_000_003 * self.epoch)
        if self.log is not None:
            self.log.truncate_after(self.epoch)

    def finish(self) -> None:
        """Leave the final weights (the EMA if enabled) in the model and export them (rank 0)."""
        if self.ema is not None:
            self.model.load_state_dict(self.ema.module.state_dict())
        for param in self.frozen:
            param.requires_grad_(True)
        self.model.eval()
        if self.output_dir is not None and self.dist.is_main:
            last = self.history[-1] if self.history else {}
            export_model(
                self.model,
                self.output_dir,
                {
                    "epochs": self.epoch,
                    "steps": self.global_step,
                    "final_loss": last.get("loss"),
                    "distilled": self.teacher is not None,
                    "ema": self.ema is not None,
                },
            )
        distributed.barrier(self.dist)

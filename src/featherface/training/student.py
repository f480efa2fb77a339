"""The student as trained: DropBlock on its neck features, 1×1 feature adapters, body initialisation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import safetensors.torch
import torch
from torch import nn
from torchvision.ops import drop_block2d

from featherface.weights import load_state_dict_strict, read_legacy_checkpoint

ModelOutput = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
BODY_STAGES = ("stage1.", "stage2.", "stage3.")


def _require_neck(model: nn.Module, why: str) -> None:
    if not (hasattr(model, "forward_neck") and hasattr(model, "forward_head")):
        raise TypeError(
            f"{why} needs a model with forward_neck() and forward_head() (like FeatherFace); "
            f"{type(model).__name__} has neither"
        )


class TrainableStudent(nn.Module):
    """Wraps the student for training; ``forward(images)`` returns ``(outputs, adapted neck features)``.

    With ``dropblock > 0`` each neck map goes through DropBlock (drop probability ``dropblock``,
    square blocks of ``dropblock_size``) in training mode. With ``adapters`` (1×1 convs mapping the
    student's neck channels to the teacher's) the adapted neck features are returned for feature
    distillation, else ``None``. Nothing here changes the student's own parameters or state dict.
    """

    def __init__(
        self,
        model: nn.Module,
        adapters: nn.ModuleList | None = None,
        dropblock: float = 0.0,
        dropblock_size: int = 3,
    ) -> None:
        super().__init__()
        if adapters is not None or dropblock > 0:
            _require_neck(model, "feature distillation or DropBlock")
        if not 0.0 <= dropblock < 1.0:
            raise ValueError(f"dropblock is a drop probability in [0, 1), got {dropblock}")
        self.model = model
        self.adapters = adapters
        self.dropblock = dropblock
        self.dropblock_size = dropblock_size

    def _block_size(self, feature: torch.Tensor) -> int:
        """``dropblock_size`` limited to the map, made odd (DropBlock centres its blocks)."""
        size = min(self.dropblock_size, *feature.shape[-2:])
        return size if size % 2 else size - 1

    def forward(self, images: torch.Tensor) -> tuple[ModelOutput, list[torch.Tensor] | None]:
        if self.adapters is None and self.dropblock == 0:
            return self.model(images), None
        features = self.model.forward_neck(images)
        if self.training and self.dropblock > 0:
            features = [drop_block2d(f, self.dropblock, self._block_size(f)) for f in features]
        outputs = self.model.forward_head(features)
        if self.adapters is None:
            return outputs, None
        return outputs, [adapter(f) for adapter, f in zip(self.adapters, features)]


def neck_channels(model: nn.Module, device: torch.device) -> list[int]:
    """Channels of each neck map, found by running a 64×64 zero image in eval mode."""
    _require_neck(model, "feature distillation")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        features = model.forward_neck(torch.zeros(1, 3, 64, 64, device=device))
    model.train(was_training)
    return [f.shape[1] for f in features]


def feature_adapters(student_channels: Sequence[int], teacher_channels: Sequence[int]) -> nn.ModuleList:
    """One 1×1 conv per level mapping student channels to teacher channels."""
    if len(student_channels) != len(teacher_channels):
        raise ValueError(
            f"student has {len(student_channels)} neck levels, teacher {len(teacher_channels)}: "
            "feature distillation needs the same pyramid"
        )
    return nn.ModuleList(nn.Conv2d(s, t, 1) for s, t in zip(student_channels, teacher_channels))


def _body_tensors(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"body weights {path} do not exist")
    if path.suffix == ".safetensors":
        tensors = safetensors.torch.load_file(str(path))
    else:
        tensors = read_legacy_checkpoint(path)
    body = {}
    for key, tensor in tensors.items():
        key = key.removeprefix("module.").removeprefix("body.")
        if key.startswith(BODY_STAGES):
            body[key] = tensor
    if not body:
        raise ValueError(
            f"{path} holds no MobileNetV1 body weights (keys starting with stage1/2/3, optionally behind "
            "'module.' or 'body.')"
        )
    return body


def load_body(model: nn.Module, source: str | os.PathLike | nn.Module) -> None:
    """Initialise ``model.body`` (MobileNetV1-0.25) strictly from another model's body (e.g. the
    teacher) or a file: the ImageNet checkpoint (``{'state_dict': {'module.stage1…'}}``), a
    FeatherFace safetensors / ``.pth`` (``body.stage1…``), or a bare body state dict."""
    if not hasattr(model, "body"):
        raise TypeError(f"{type(model).__name__} has no .body to initialise")
    if isinstance(source, nn.Module):
        if not hasattr(source, "body"):
            raise TypeError(f"{type(source).__name__} has no .body to copy")
        state, name = source.body.state_dict(), f"the body of {type(source).__name__}"
    else:
        state, name = _body_tensors(source), str(source)
    load_state_dict_strict(model.body, {k: v.clone() for k, v in state.items()}, name)

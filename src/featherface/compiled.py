"""A model run through ``torch.compile`` (TorchInductor) for fixed-size inference, eager where it must be."""

from __future__ import annotations

import importlib.util
import os
import shutil

import torch
from torch import nn

from featherface.models.padding import active_region
from featherface.models.tracing import is_exporting

_CXX_COMPILERS = ("g++", "clang++", "c++")


def _check_toolchain(device: torch.device) -> None:
    """Fail early, with the fix, where TorchInductor could not build kernels on ``device``."""
    if device.type == "cpu":
        chosen = os.environ.get("CXX")
        if not (shutil.which(chosen) if chosen else any(shutil.which(c) for c in _CXX_COMPILERS)):
            raise RuntimeError(
                "compiling for the CPU needs a C++ compiler (g++ or clang++, or one named by $CXX); "
                "install one (e.g. apt install g++) or run without compiling (compile=False)"
            )
    elif device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise RuntimeError(
            "compiling for CUDA needs Triton (pip install triton); or run without compiling (compile=False)"
        )


class CompiledModel(nn.Module):
    """``model`` whose forward pass runs through ``torch.compile`` (same outputs, fewer, fused kernels).

    Built by :func:`compile_model`. The first call at a new input size compiles (about a minute
    for FeatherFace V1 or V2 on two CPU cores, seconds once TorchInductor's on-disk cache holds
    it); later calls at that size run the compiled kernels. Padded mixed-size batches (inside
    :func:`featherface.models.padding.valid_region`) and exports run the eager model, so the
    results never depend on which path ran. Attributes other than modules and parameters (``arch``,
    ``pretrained_cfg``, …) are those of ``model``.
    """

    def __init__(self, model: nn.Module, *, dynamic: bool | None = False) -> None:
        super().__init__()
        self.model = model
        # A plain attribute, not a submodule: the compiled wrapper shares ``model``'s parameters,
        # which must appear once in ``state_dict`` and ``parameters()``.
        object.__setattr__(self, "_compiled", torch.compile(model, dynamic=dynamic))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(self.model, name)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``images (B, 3, H, W)`` → the model's outputs, compiled unless padded or exporting."""
        if active_region() is not None or is_exporting():
            return self.model(images)
        return self._compiled(images)


def compile_model(model: nn.Module, *, dynamic: bool | None = False) -> CompiledModel:
    """Wrap ``model`` (best: a fused one, ``model.fuse()``) so its forward pass runs compiled.

    ``dynamic=False`` (default) specialises the kernels to each input size: fastest for
    fixed-size inputs (a video stream, or ``FaceDetector(input_size=...)`` on images of one
    aspect ratio), at one compilation per new size; ``None`` lets ``torch.compile`` switch to
    size-generic kernels at the second size (one more, slower compilation; slower kernels).
    Needs a C++ compiler on the CPU (Triton on CUDA); raises ``RuntimeError`` naming the fix when
    it is missing. Move the model to its device and load its weights before compiling.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, CompiledModel):
        raise ValueError("model is already compiled; pass the eager model (compiled.model)")
    parameter = next(model.parameters(), None)
    _check_toolchain(parameter.device if parameter is not None else torch.device("cpu"))
    return CompiledModel(model, dynamic=dynamic)

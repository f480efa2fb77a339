"""Export FeatherFace models to ONNX (dynamic batch / height / width) and TorchScript, with a numeric check.

The exported graph is the fused, inference-only model (see :func:`featherface.models.fuse.fuse_model`)
with V1's deformable convs written as the fast gather formulation of
:mod:`featherface.models.dcn` — the same maths as ``torchvision.ops.deform_conv2d``, never a plain
conv. After writing the file the export runs it (ONNX Runtime, or the TorchScript interpreter) and
the PyTorch model on the check images at three sizes and fails if any output differs by more than
``tolerance``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from featherface.models.deform import set_deform_impl
from featherface.models.fuse import fuse_model, ungroup_convs
from featherface.models.registry import InputCfg
from featherface.models.widen import widen_stem

OUTPUT_NAMES = ("loc", "conf", "landms")
INPUT_NAME = "images"
#: ``(height, width, batch)`` of the three checks of a dynamic export: even, odd, and a small batch of 2.
CHECK_SIZES: tuple[tuple[int, int, int], ...] = ((480, 640, 1), (333, 517, 1), (97, 131, 2))
DEFAULT_OPSET = 17
METADATA_PREFIX = "featherface."


class ExportCheckError(RuntimeError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance."""


@dataclass
class ExportReport:
    """What was written and how it compares with PyTorch.

    ``max_abs_diff`` maps ``"BxHxW"`` to the largest absolute difference over the three outputs;
    ``check_images`` says whether real images (their paths) or a synthetic pattern were used.
    """

    path: Path
    format: str
    dynamic: bool
    opset: int | None
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    check_images: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line per check, as the CLI prints it."""
        images = ", ".join(self.check_images) if self.check_images else "a synthetic pattern"
        lines = [f"wrote {self.path} ({self.format}, {'dynamic' if self.dynamic else 'static'} shape)"]
        lines += [f"  check {size}: max |Δ| {diff:.2e}" for size, diff in self.max_abs_diff.items()]
        lines.append(f"  checked on {images}")
        return "\n".join(lines)


def cpu_channel_block(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> int | None:
    """The ``channel_block`` of :func:`export_onnx` that suits ONNX Runtime on this CPU: 16 when it
    has AVX-512 (16-channel blocks), otherwise ``None`` (8-channel blocks already fit the stem, or a
    system whose CPU flags cannot be read)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    return 16 if re.search(r"^flags\s*:.*\bavx512f\b", text, flags=re.MULTILINE) else None


def _inference_copy(model: nn.Module, fuse: bool) -> nn.Module:
    model = set_deform_impl(copy.deepcopy(model).float().cpu().eval(), "fast")
    return fuse_model(model, channels_last=False) if fuse else model


def _input_cfg(model: nn.Module) -> InputCfg:
    cfg = getattr(model, "pretrained_cfg", None)
    return cfg.input if cfg is not None else InputCfg()


def _synthetic_image(height: int, width: int) -> np.ndarray:
    """A smooth colour pattern with texture: ``(H, W, 3)`` uint8 (used when no check image is given)."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([np.sin(rows / 23.0), np.cos(cols / 31.0), np.sin((rows + cols) / 17.0)], axis=-1)
    noise = np.random.default_rng(0).normal(0, 0.2, (height, width, 3))
    return np.clip((base + noise + 1.5) * 85, 0, 255).astype(np.uint8)


def check_batches(
    images: list[np.ndarray], input_cfg: InputCfg, sizes: tuple[tuple[int, int, int], ...]
) -> list[torch.Tensor]:
    """Network inputs ``(B, 3, H, W)`` made from BGR ``images`` resized to each ``(H, W, B)`` of ``sizes``."""
    mean = np.asarray(input_cfg.mean, np.float32)
    std = np.asarray(input_cfg.std, np.float32)
    batches = []
    for i, (height, width, batch) in enumerate(sizes):
        chosen = [images[(i + k) % len(images)] for k in range(batch)]
        arrays = []
        for image in chosen:
            resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
            if input_cfg.color_order == "rgb":
                resized = resized[..., ::-1]
            arrays.append(((resized - mean) / std).transpose(2, 0, 1))
        batches.append(torch.from_numpy(np.ascontiguousarray(np.stack(arrays))))
    return batches


def _read_check_images(paths: list[str | os.PathLike] | None) -> tuple[list[np.ndarray], list[str]]:
    if not paths:
        return [_synthetic_image(480, 640)], []
    images = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"check image {path} does not exist or is not an image OpenCV can read")
        images.append(image)
    return images, [str(p) for p in paths]


def _worst(expected: tuple[torch.Tensor, ...], actual: list[np.ndarray]) -> float:
    return max(float(np.abs(e.numpy() - np.asarray(a)).max()) for e, a in zip(expected, actual))


def _check_sizes(dynamic: bool, input_size: tuple[int, int]) -> tuple[tuple[int, int, int], ...]:
    if dynamic:
        return CHECK_SIZES
    return ((*input_size, 1),)


def _add_metadata(path: Path, model: nn.Module) -> None:
    import onnx

    proto = onnx.load(str(path))
    cfg = getattr(model, "pretrained_cfg", None)
    entries = {
        "arch": getattr(model, "arch", type(model).__name__),
        "weights": cfg.tag if cfg is not None else "",
        "input": json.dumps(_input_cfg(model).__dict__),
        "outputs": "loc (B,P,4), conf logits (B,P,2), landms (B,P,10) per prior",
    }
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = METADATA_PREFIX + key, value
    onnx.save(proto, str(path))


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    dynamic: bool = True,
    opset: int = DEFAULT_OPSET,
    input_size: tuple[int, int] = (480, 640),
    check_images: list[str | os.PathLike] | None = None,
    tolerance: float = 1e-3,
    fuse: bool = True,
    channel_block: int | None = None,
) -> ExportReport:
    """Write ``model`` as an ONNX file and check it with ONNX Runtime.

    Args:
        model: a FeatherFace model (weights loaded); it is not modified.
        path: the ``.onnx`` file to write.
        dynamic: batch, height and width are free (any size); otherwise fixed to ``input_size``.
        opset: ONNX opset version (13 or newer).
        input_size: ``(H, W)`` of the traced example (and of a static export).
        check_images: BGR image files for the check (a synthetic pattern when ``None``).
        tolerance: largest allowed absolute difference between ONNX Runtime and PyTorch outputs.
        fuse: export the fused model (BN folded, convs merged, grouped convs ungrouped for
            ONNX Runtime's blocked layout); outputs are the same.
        channel_block: widen the 8-channel MobileNet stem with zero channels to a multiple of
            this (see :func:`featherface.models.widen.widen_stem`; needs ``fuse``). 16 suits
            ONNX Runtime on AVX-512 CPUs (about 0.4 ms less at 640×480), where it otherwise
            converts the stem's layout; on AVX2 CPUs (8-channel blocks) it only adds work.
            Outputs are the same either way.

    Returns:
        an :class:`ExportReport`. Raises :class:`ExportCheckError` when the check fails and
        ``ImportError`` (naming the ``featherface[onnx]`` extra) without onnx / onnxruntime.
    """
    _require("onnx", "onnxruntime")
    if opset < 13:
        raise ValueError(
            f"opset must be 13 or newer (the export uses Resize and Slice with steps), got {opset}"
        )
    if channel_block is not None and not fuse:
        raise ValueError("channel_block widens the fused model's stem: leave fuse=True or drop channel_block")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    reference = set_deform_impl(copy.deepcopy(model).float().cpu().eval(), "fast")
    exported = _inference_copy(model, fuse)
    if fuse:
        ungroup_convs(exported)
    if channel_block is not None:
        widen_stem(exported, channel_block)
    example = torch.zeros(1, 3, *input_size)
    axes = {name: {0: "batch"} for name in OUTPUT_NAMES}
    axes[INPUT_NAME] = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        # The torch.export-based exporter specialises this model's sizes and takes minutes; the
        # TorchScript-based one records the size arithmetic and is checked below at three sizes.
        warnings.filterwarnings(
            "ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        torch.onnx.export(
            exported,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes if dynamic else None,
            opset_version=opset,
        )
    _add_metadata(path, model)
    report = ExportReport(path, "onnx", dynamic, opset)
    images, report.check_images = _read_check_images(check_images)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in check_batches(images, _input_cfg(model), _check_sizes(dynamic, input_size)):
        with torch.inference_mode():
            expected = reference(batch)
        actual = session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch.numpy()})
        report.max_abs_diff["x".join(map(str, batch.shape[:1] + batch.shape[2:]))] = _worst(expected, actual)
    raise_if_off(report, tolerance)
    return report


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    input_size: tuple[int, int] = (480, 640),
    check_images: list[str | os.PathLike] | None = None,
    tolerance: float = 1e-4,
    fuse: bool = True,
) -> ExportReport:
    """Write ``model`` as a traced TorchScript file (any batch and size) and check it.

    ``torch.jit.trace`` is deprecated upstream; ONNX is the recommended deployment format. The
    arguments mean what they mean for :func:`export_onnx`; the check compares the loaded
    TorchScript module with the eager model at three sizes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    reference = set_deform_impl(copy.deepcopy(model).float().cpu().eval(), "fast")
    traced_model = _inference_copy(model, fuse)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.trace.* is deprecated", category=FutureWarning
        )
        traced = torch.jit.trace(traced_model, torch.zeros(1, 3, *input_size), check_trace=False)
        traced.save(str(path))
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.load.* is deprecated", category=FutureWarning
        )
        loaded = torch.jit.load(str(path))
    report = ExportReport(path, "torchscript", True, None)
    images, report.check_images = _read_check_images(check_images)
    for batch in check_batches(images, _input_cfg(model), CHECK_SIZES):
        with torch.inference_mode():
            expected, actual = reference(batch), loaded(batch)
        report.max_abs_diff["x".join(map(str, batch.shape[:1] + batch.shape[2:]))] = _worst(
            expected, [a.numpy() for a in actual]
        )
    raise_if_off(report, tolerance)
    return report


def raise_if_off(report: ExportReport, tolerance: float) -> None:
    """Raise :class:`ExportCheckError` when any check of ``report`` exceeds ``tolerance``."""
    worst = max(report.max_abs_diff.values())
    if worst > tolerance:
        raise ExportCheckError(
            f"{report.path}: exported outputs differ from PyTorch by up to {worst:.3g} (> {tolerance}); "
            f"per check: {report.max_abs_diff}. The file was written but should not be used."
        )


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"ONNX export needs {', '.join(missing)}: pip install 'featherface[onnx]' "
            "(or pip install onnx onnxruntime)"
        )

"""An exported FeatherFace ONNX file run by ONNX Runtime, callable like the PyTorch model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from featherface.export import INPUT_NAME, METADATA_PREFIX, OUTPUT_NAMES
from featherface.models.padding import active_region
from featherface.models.registry import InputCfg, WeightsCfg, resolve_name
from featherface.priors import DEFAULT_PRIORS


def _session(path: Path, threads: int | None, device: torch.device):
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            "the onnxruntime backend needs onnxruntime: pip install 'featherface[onnx]'"
        ) from error
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise ValueError(
                "device is CUDA but this onnxruntime has no CUDAExecutionProvider; "
                "install onnxruntime-gpu or use device='cpu'"
            )
        providers.insert(0, "CUDAExecutionProvider")
    return onnxruntime.InferenceSession(str(path), options, providers=providers)


def _weights_cfg(metadata: dict[str, str]) -> WeightsCfg | None:
    arch, tag = metadata.get(METADATA_PREFIX + "arch"), metadata.get(METADATA_PREFIX + "weights")
    if not arch:
        return None
    try:
        cfg, _ = resolve_name(arch)
    except ValueError:
        return None
    return cfg.weights_cfg(tag or None)


class OnnxRuntimeModel(nn.Module):
    """Run a file written by :func:`featherface.export.export_onnx` with ONNX Runtime.

    ``model(images)`` takes a ``(B, 3, H, W)`` float tensor (prepared exactly as for the PyTorch
    model) and returns ``loc (B, P, 4)``, ``conf`` logits ``(B, P, 2)`` and ``landms (B, P, 10)`` as
    tensors on the input's device, so it drops in wherever the PyTorch model is called, including
    :class:`featherface.FaceDetector`. Inside :func:`featherface.models.padding.valid_region` (a
    padded batch of mixed sizes) each image runs at its own size and its outputs are placed on the
    padded batch's priors, so results equal single-image runs.

    Args:
        path: the ``.onnx`` file.
        threads: ONNX Runtime intra-op threads (its default when ``None``).
        device: ``"cpu"`` or ``"cuda"`` (needs onnxruntime-gpu).
    """

    def __init__(
        self, path: str | os.PathLike, threads: int | None = None, device: torch.device | str = "cpu"
    ) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"ONNX model {self.path} does not exist; write one with `featherface export onnx`"
            )
        self.session = _session(self.path, threads, torch.device(device))
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.arch = metadata.get(METADATA_PREFIX + "arch", self.path.stem)
        self.pretrained_cfg = _weights_cfg(metadata)
        stored = json.loads(metadata.get(METADATA_PREFIX + "input", "{}"))
        self.input_cfg = InputCfg(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})
        self.input_name = self.session.get_inputs()[0].name
        if self.input_name != INPUT_NAME:
            raise ValueError(
                f"{self.path} takes input {self.input_name!r}, not {INPUT_NAME!r}: it was not written by "
                "featherface.export.export_onnx"
            )

    def _run(self, images: np.ndarray) -> list[np.ndarray]:
        return self.session.run(list(OUTPUT_NAMES), {self.input_name: images})

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        region = active_region()
        outputs = self._run(array) if region is None else self._run_padded(array, region.sizes.tolist())
        return tuple(torch.from_numpy(np.ascontiguousarray(o)).to(images.device) for o in outputs)

    def _run_padded(self, images: np.ndarray, sizes: list[list[int]]) -> list[np.ndarray]:
        """Each image at its own size, its per-level prior grid written into the padded one."""
        batch, _, height, width = images.shape
        padded_cells = [(-(-height // s), -(-width // s)) for s in DEFAULT_PRIORS.steps]
        anchors = [len(m) for m in DEFAULT_PRIORS.min_sizes]
        total = sum(r * c * a for (r, c), a in zip(padded_cells, anchors))
        outputs = [np.zeros((batch, total, n), np.float32) for n in (4, 2, 10)]
        for i, (h, w) in enumerate(sizes):
            single = self._run(np.ascontiguousarray(images[i : i + 1, :, :h, :w]))
            start_padded = start_single = 0
            for step, (rows, cols), a in zip(DEFAULT_PRIORS.steps, padded_cells, anchors):
                own_rows, own_cols = -(-h // step), -(-w // step)
                for out, part in zip(outputs, single):
                    depth = part.shape[-1]
                    own = part[0, start_single : start_single + own_rows * own_cols * a]
                    grid = out[i, start_padded : start_padded + rows * cols * a].reshape(rows, cols, a, depth)
                    grid[:own_rows, :own_cols] = own.reshape(own_rows, own_cols, a, depth)
                start_padded += rows * cols * a
                start_single += own_rows * own_cols * a
        return outputs


def onnxruntime_model(
    path: object, device: torch.device, half: bool = False, checkpoint_path: object = None
) -> OnnxRuntimeModel:
    """The :class:`OnnxRuntimeModel` behind ``FaceDetector(path, backend="onnxruntime")``."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"backend='onnxruntime' takes the path of an .onnx file as model, got {type(path).__name__}"
        )
    if half:
        raise ValueError("half=True is for the torch backend; export a float32 model for onnxruntime")
    if checkpoint_path is not None:
        raise ValueError("checkpoint_path does not apply to an .onnx file: export the checkpoint first")
    return OnnxRuntimeModel(path, device=device)

"""FaceDetector: images in, :class:`~featherface.results.Faces` out (preprocess → model → decode → NMS)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from featherface.compiled import compile_model
from featherface.factory import create_model
from featherface.io import ImageInput, Pixels, image_size, load_image, load_images
from featherface.models.padding import valid_region
from featherface.models.registry import InputCfg, PriorCfg, WeightsCfg
from featherface.postprocess import postprocess
from featherface.priors import prior_boxes, valid_prior_mask
from featherface.results import Faces
from featherface.runtime import onnxruntime_model

PAD_MULTIPLE = 32


@dataclass
class PreparedBatch:
    """A batch ready for the network.

    ``images``: ``(B, 3, H, W)`` normalised input; ``sizes``: per-image ``(h, w)`` inside it
    (before padding); ``original_sizes``: ``(h, w)`` of the images as given; ``padded``: whether
    images of different sizes were padded to a common size.
    """

    images: torch.Tensor
    sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    padded: bool


def _resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available; use device='cpu'")
    return device


def _target_size(height: int, width: int, input_size: int | None) -> tuple[int, int]:
    if input_size is None or max(height, width) <= input_size:
        return height, width
    scale = input_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


class FaceDetector:
    """Detect faces, with boxes, scores and 5-point landmarks, in images of any size.

    Args:
        model: a registered name (``arch`` or ``arch.tag``; pretrained weights are loaded) or an
            ``nn.Module`` returning ``(loc, conf logits, landms)`` per prior.
        checkpoint_path: load these weights instead of the pretrained ones.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``…; default CUDA when available.
        half: run the network under float16 autocast (CUDA only): convolutions in float16,
            precision-critical ops (deformable sampling, reductions, softmax) in float32.
        score_threshold: minimum face probability of a detection.
        nms_threshold: IoU above which overlapping detections are suppressed.
        top_k: candidates per image kept before NMS.
        max_faces: detections per image kept after NMS.
        input_size: ``None`` runs at original size; an int caps the long side (images are
            shrunk, then boxes and landmarks are mapped back to original pixels).
        backend: ``"torch"``, or ``"onnxruntime"`` to run a file written by ``featherface export
            onnx`` (``model`` is its path) with the same pre- and post-processing.
        fuse: run a fused copy of a FeatherFace model (batch norms and shuffles folded into
            convs, channels-last; same outputs within 1e-4, faster). The module you pass is not
            changed.
        compile: run the network through ``torch.compile`` (:func:`featherface.compile_model`):
            10–25% less time per image on the CPU for inputs of one size (a video stream, or
            ``input_size`` with images of one aspect ratio), but the first image of each new
            size compiles first (about a minute on two cores, seconds when cached). Needs a C++
            compiler (Triton on CUDA). Padded mixed-size batches run uncompiled.

    Calling the detector on one image returns :class:`Faces`; on a list (sizes may differ) or an
    ``N×C×H×W`` tensor it returns ``list[Faces]``. One detector may be used from several threads.
    """

    def __init__(
        self,
        model: str | nn.Module = "featherface_v1",
        *,
        checkpoint_path: str | os.PathLike | None = None,
        device: torch.device | str | None = None,
        half: bool = False,
        score_threshold: float | None = None,
        nms_threshold: float | None = None,
        top_k: int = 5000,
        max_faces: int = 750,
        input_size: int | None = None,
        backend: str = "torch",
        fuse: bool = True,
        compile: bool = False,
    ) -> None:
        self.device = _resolve_device(device)
        if half and self.device.type != "cuda":
            raise ValueError("half=True needs a CUDA device; float16 convolutions are not supported on CPU")
        if backend == "onnxruntime":
            if compile:
                raise ValueError(
                    "compile=True applies to the torch backend; ONNX Runtime optimises its graph itself"
                )
            model = onnxruntime_model(model, self.device, half=half, checkpoint_path=checkpoint_path)
        elif backend != "torch":
            raise ValueError(f"backend must be 'torch' or 'onnxruntime', got {backend!r}")
        if isinstance(model, str):
            model = create_model(model, pretrained=checkpoint_path is None, checkpoint_path=checkpoint_path)
        elif not isinstance(model, nn.Module):
            raise TypeError(f"model must be a registered name or an nn.Module, got {type(model).__name__}")
        elif checkpoint_path is not None:
            raise ValueError(
                "checkpoint_path only applies when model is a name; load weights into the module"
            )
        cfg: WeightsCfg | None = getattr(model, "pretrained_cfg", None)
        self.input_cfg: InputCfg = cfg.input if cfg else InputCfg()
        self.prior_cfg: PriorCfg = cfg.priors if cfg else PriorCfg()
        self.score_threshold = float(
            score_threshold if score_threshold is not None else (cfg.score_threshold if cfg else 0.5)
        )
        self.nms_threshold = float(
            nms_threshold if nms_threshold is not None else (cfg.nms_threshold if cfg else 0.4)
        )
        self._check_settings(top_k, max_faces, input_size)
        self.top_k, self.max_faces, self.input_size = top_k, max_faces, input_size
        self.half = half
        model = model.eval()
        if fuse and callable(getattr(model, "fuse", None)):
            model = model.fuse()
        model = model.to(self.device)
        self.model = compile_model(model) if compile else model
        self._mean = torch.tensor(self.input_cfg.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.input_cfg.std, device=self.device).view(1, 3, 1, 1)

    def _check_settings(self, top_k: int, max_faces: int, input_size: int | None) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if not 0.0 < self.nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold must be in (0, 1], got {self.nms_threshold}")
        if top_k < 1 or max_faces < 1:
            raise ValueError(f"top_k and max_faces must be positive, got {top_k} and {max_faces}")
        if input_size is not None and input_size < PAD_MULTIPLE:
            raise ValueError(f"input_size must be None or at least {PAD_MULTIPLE} pixels, got {input_size}")

    def __repr__(self) -> str:
        name = getattr(self.model, "arch", type(self.model).__name__)
        return (
            f"FaceDetector({name}, device={self.device}, score_threshold={self.score_threshold}, "
            f"nms_threshold={self.nms_threshold}, input_size={self.input_size})"
        )

    def _to_network(self, pixels: Pixels) -> torch.Tensor:
        height, width = image_size(pixels)
        target = _target_size(height, width, self.input_size)
        if isinstance(pixels, np.ndarray):
            if target != (height, width):
                pixels = cv2.resize(pixels, (target[1], target[0]), interpolation=cv2.INTER_LINEAR)
            tensor = torch.from_numpy(pixels).to(self.device).permute(2, 0, 1).float()
        else:
            tensor = pixels.to(self.device)
            if target != (height, width):
                tensor = torch.nn.functional.interpolate(
                    tensor[None], size=target, mode="bilinear", align_corners=False, antialias=True
                )[0]
        if self.input_cfg.color_order == "rgb":
            tensor = tensor.flip(0)
        return tensor

    def prepare(self, images: list[Pixels]) -> PreparedBatch:
        """Resize, normalise and (for mixed sizes) pad images into one ``(B, 3, H, W)`` batch."""
        tensors = [self._to_network(p) for p in images]
        sizes = [tuple(t.shape[-2:]) for t in tensors]
        padded = len(set(sizes)) > 1
        if padded:
            height = -(-max(h for h, _ in sizes) // PAD_MULTIPLE) * PAD_MULTIPLE
            width = -(-max(w for _, w in sizes) // PAD_MULTIPLE) * PAD_MULTIPLE
            batch = self._mean.new_zeros(len(tensors), 3, height, width)
            for i, t in enumerate(tensors):
                batch[i, :, : t.shape[1], : t.shape[2]] = (t - self._mean[0]) / self._std[0]
        else:
            batch = (torch.stack(tensors) - self._mean) / self._std
        return PreparedBatch(batch, sizes, [image_size(p) for p in images], padded)

    def infer(self, batch: PreparedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the network: ``loc (B, P, 4)``, ``conf`` logits ``(B, P, 2)``, ``landms (B, P, 10)``."""
        region = valid_region(batch.sizes, tuple(batch.images.shape[-2:])) if batch.padded else None
        autocast = torch.autocast("cuda", dtype=torch.float16, enabled=self.half)
        with torch.inference_mode(), autocast, region or contextlib.nullcontext():
            return self.model(batch.images)

    def decode(
        self, batch: PreparedBatch, outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> list[Faces]:
        """Decode, threshold and suppress raw outputs; map results to original pixels."""
        input_size = tuple(batch.images.shape[-2:])
        priors = prior_boxes(*input_size, device=self.device, cfg=self.prior_cfg)
        valid = (
            valid_prior_mask(batch.sizes, input_size, self.prior_cfg).to(self.device)
            if batch.padded
            else None
        )
        with torch.inference_mode():
            detections = postprocess(
                *outputs,
                priors,
                input_size,
                score_threshold=self.score_threshold,
                nms_threshold=self.nms_threshold,
                top_k=self.top_k,
                max_faces=self.max_faces,
                variances=self.prior_cfg.variances,
                valid=valid,
            )
        results = []
        for det, (height, width), original in zip(detections, batch.sizes, batch.original_sizes):
            scale = torch.tensor(
                [original[1] / width, original[0] / height], dtype=torch.float32, device=det.boxes.device
            )
            results.append(Faces(det.boxes * scale.repeat(2), det.scores, det.landmarks * scale, original))
        return results

    def detect(self, images: list[Pixels]) -> list[Faces]:
        """Detect faces in already-loaded images (see :func:`featherface.io.load_image`) as one batch."""
        batch = self.prepare(images)
        return self.decode(batch, self.infer(batch))

    def __call__(
        self, images: ImageInput | list[ImageInput], *, batch_size: int = 8, color: str | None = None
    ) -> Faces | list[Faces]:
        """Detect faces in one image or many.

        Args:
            images: a path, PIL image, numpy array (BGR unless ``color="rgb"``), ``C×H×W``
                tensor (RGB unless ``color="bgr"``), an ``N×C×H×W`` tensor, or a list of these.
            batch_size: images per forward pass for lists.
            color: channel order of array / tensor inputs (see :func:`featherface.io.load_image`).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        loaded, single = load_images(images, color)
        results: list[Faces] = []
        for start in range(0, len(loaded), batch_size):
            results.extend(self.detect(loaded[start : start + batch_size]))
        return results[0] if single else results

    def stream(
        self,
        frames: Iterable[ImageInput] | cv2.VideoCapture,
        *,
        color: str | None = None,
        batch_size: int = 1,
    ) -> Iterator[Faces]:
        """Yield :class:`Faces` for each frame of an iterable or a ``cv2.VideoCapture``.

        Frames are read lazily and processed ``batch_size`` at a time, so memory stays constant
        however long the stream.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        pending: list[Pixels] = []
        for frame in _iterate_frames(frames):
            pending.append(load_image(frame, color))
            if len(pending) == batch_size:
                yield from self.detect(pending)
                pending = []
        if pending:
            yield from self.detect(pending)


def _iterate_frames(frames: Iterable[ImageInput] | cv2.VideoCapture) -> Iterator[ImageInput]:
    if isinstance(frames, cv2.VideoCapture):
        if not frames.isOpened():
            raise ValueError("the cv2.VideoCapture is not opened (wrong path or camera index?)")
        while True:
            ok, frame = frames.read()
            if not ok:
                return
            yield frame
    else:
        yield from frames


def detect_faces(image: ImageInput, model: str = "featherface_v1", **kwargs: object) -> Faces:
    """One-shot helper: build a :class:`FaceDetector` with ``kwargs`` and run it on ``image``."""
    return FaceDetector(model, **kwargs)(load_image(image))

"""Run a detector over a WIDER FACE image folder and write its predictions in the official layout."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featherface.eval.widerface_files import write_widerface_predictions

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
WIDERFACE_DETECTOR_SETTINGS = {"score_threshold": 0.02, "nms_threshold": 0.4, "max_faces": 750}
"""Detector settings of the published WIDER FACE evaluations: score > 0.02, NMS IoU 0.4, top 750."""


def xyxy_to_widerface(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``x1 y1 x2 y2`` boxes ``(N, 4)`` and scores ``(N,)`` → ``(N, 5)`` rows of ``x y w h score``.

    ``w = x2 - x1 + 1`` (and likewise ``h``) as in the original FeatherFace evaluation script,
    which then truncates all four values to int; here they keep full precision.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    size = boxes[:, 2:] - boxes[:, :2] + 1
    return np.concatenate([boxes[:, :2], size, np.asarray(scores, dtype=np.float64).reshape(-1, 1)], axis=1)


def find_widerface_images(images_dir: str | os.PathLike) -> list[Path]:
    """Images of a folder in the official layout ``<event>/<image>.jpg``, sorted."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} does not exist (or is not a folder)")
    images = sorted(p for p in images_dir.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(
            f"no images in {images_dir}: expected the official layout <event>/<image>.jpg "
            "(e.g. WIDER_val/images, which holds 0--Parade/, 1--Handshaking/, ...)"
        )
    return images


def predict_widerface(
    detector: Callable[..., Sequence[Any]],
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Detect faces in every ``<event>/<image>`` of ``images_dir``; write ``out_dir/<event>/<image>.txt``.

    ``detector`` is a :class:`featherface.FaceDetector` (or any callable with its interface: a list
    of image paths in, one result with ``.numpy().boxes (N, 4)`` xyxy pixels and ``.scores (N,)``
    out per image), configured as :data:`WIDERFACE_DETECTOR_SETTINGS` for comparable numbers.
    ``out_dir`` must not hold prediction files yet, so that no stale file is ever scored.
    ``progress(done, total)`` is called after each batch. Returns ``{"<event>/<image>": (N, 5)}``
    rows of ``x y w h score`` at full precision (the files keep 3 decimals of the boxes).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    images = find_widerface_images(images_dir)
    out_dir = Path(out_dir)
    stale = next(out_dir.glob("*/*.txt"), None) if out_dir.is_dir() else None
    if stale is not None:
        raise ValueError(
            f"{out_dir} already holds prediction files (e.g. {stale}); choose a new folder or remove it"
        )
    written = {}
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        results = detector([str(path) for path in batch], batch_size=batch_size)
        predictions = {}
        for path, faces in zip(batch, results):
            faces = faces.numpy()
            predictions[f"{path.parent.name}/{path.stem}"] = xyxy_to_widerface(faces.boxes, faces.scores)
        write_widerface_predictions(predictions, out_dir)
        written.update(predictions)
        if progress is not None:
            progress(len(written), len(images))
    return written

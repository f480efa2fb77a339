"""Image input normalisation: paths, PIL images, numpy arrays and tensors to BGR pixels.

Every accepted input becomes either an ``H×W×3`` uint8 BGR numpy array (files, PIL images,
arrays) or a ``3×H×W`` float32 BGR tensor on 0–255 (tensors, which keep their device).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

ImageInput = str | os.PathLike | np.ndarray | torch.Tensor | Any
Pixels = np.ndarray | torch.Tensor

COLOR_ORDERS = ("bgr", "rgb")


def _check_color(color: str | None) -> None:
    if color is not None and color not in COLOR_ORDERS:
        raise ValueError(f"color must be 'bgr', 'rgb' or None, got {color!r}")


def _check_finite_range(values: np.ndarray | torch.Tensor, what: str) -> None:
    if values.dtype.is_floating_point if isinstance(values, torch.Tensor) else values.dtype.kind == "f":
        finite = (
            torch.isfinite(values).all() if isinstance(values, torch.Tensor) else np.isfinite(values).all()
        )
        if not bool(finite):
            raise ValueError(f"{what} contains NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"float {what} must hold values in [0, 1], got range [{low:g}, {high:g}]; "
                "pass uint8 pixels or divide by 255"
            )


def read_image_file(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``H×W×3`` uint8 BGR, applying its EXIF orientation.

    Gray, alpha and 16-bit files are converted (alpha dropped, 16 bits scaled to 8).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not an image file")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(
            f"cannot decode {path} as an image (not an image, corrupt, or an unsupported format)"
        )
    return image


def _from_pil(image: Any) -> np.ndarray:
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    if image.width == 0 or image.height == 0:
        raise ValueError(f"expected a non-empty image, got a PIL image of size {image.size}")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image).astype(np.float64)
        scale = 257.0 if image.mode.startswith("I;16") or array.max() > 255 else 1.0
        gray = np.clip(np.round(array / scale), 0, 255).astype(np.uint8)
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    if image.mode != "RGB":
        image = image.convert("RGBA").convert("RGB") if "A" in image.getbands() else image.convert("RGB")
    return cv2.cvtColor(np.asarray(image, dtype=np.uint8), cv2.COLOR_RGB2BGR)


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return np.round(array / 257.0).astype(np.uint8)
    if array.dtype.kind == "f":
        _check_finite_range(array, "image")
        return np.round(array * 255.0).astype(np.uint8)
    raise TypeError(f"unsupported image dtype {array.dtype}; pass uint8, uint16, or float values in [0, 1]")


def _from_array(array: np.ndarray, color: str | None) -> np.ndarray:
    if array.ndim not in (2, 3):
        raise ValueError(f"expected an H×W×3 (BGR), H×W×4 or H×W image, got an array of shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"expected a non-empty H×W×3 uint8 image, got shape {array.shape}")
    channels = 1 if array.ndim == 2 else array.shape[2]
    if channels not in (1, 3, 4):
        raise ValueError(
            f"expected 1, 3 or 4 channels (gray, BGR, BGRA), got {channels} (array shape {array.shape})"
        )
    pixels = np.ascontiguousarray(_array_to_uint8(array))
    if channels == 1:
        return cv2.cvtColor(pixels.reshape(pixels.shape[:2]), cv2.COLOR_GRAY2BGR)
    if channels == 4:
        pixels = pixels[..., :3]
    return np.ascontiguousarray(pixels[..., ::-1]) if color == "rgb" else pixels


def _from_tensor(tensor: torch.Tensor, color: str | None) -> torch.Tensor:
    if tensor.ndim != 3:
        raise ValueError(f"expected a C×H×W image tensor, got shape {tuple(tensor.shape)}")
    channels, height, width = tensor.shape
    if height == 0 or width == 0:
        raise ValueError(f"expected a non-empty C×H×W image tensor, got shape {tuple(tensor.shape)}")
    if channels not in (1, 3, 4):
        raise ValueError(f"expected 1, 3 or 4 channels first (C×H×W), got shape {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        pixels = tensor.float()
    elif tensor.dtype.is_floating_point:
        _check_finite_range(tensor, "image tensor")
        pixels = tensor.float() * 255.0
    else:
        raise TypeError(f"unsupported tensor dtype {tensor.dtype}; pass uint8, or float values in [0, 1]")
    if channels == 1:
        return pixels.expand(3, height, width).contiguous()
    pixels = pixels[:3]
    return pixels if color == "bgr" else pixels.flip(0)


def load_image(image: ImageInput, color: str | None = None) -> Pixels:
    """Normalise one image to BGR pixels.

    Args:
        image: a path, a ``PIL.Image``, a numpy array (``H×W`` gray, ``H×W×3`` or ``H×W×4``;
            uint8, uint16, or float in [0, 1]) or a ``C×H×W`` tensor (uint8, or float in [0, 1]).
        color: channel order of array and tensor inputs. ``None`` means BGR for numpy arrays
            (OpenCV's convention) and RGB for tensors (torchvision's); files and PIL images
            know their own order.

    Returns:
        ``H×W×3`` uint8 BGR numpy array, or a ``3×H×W`` float32 BGR tensor (0–255) for tensors.
    """
    _check_color(color)
    if isinstance(image, (str, os.PathLike)):
        return read_image_file(image)
    if isinstance(image, np.ndarray):
        return _from_array(image, color)
    if isinstance(image, torch.Tensor):
        return _from_tensor(image, color)
    if type(image).__module__.startswith("PIL."):
        return _from_pil(image)
    raise TypeError(
        f"unsupported image type {type(image).__name__}; pass a path, PIL.Image, numpy array or torch tensor"
    )


def load_images(images: ImageInput | list, color: str | None = None) -> tuple[list[Pixels], bool]:
    """Normalise one image, a list of images, or an ``N×C×H×W`` tensor.

    Returns the images and whether the input was a single image. Errors in a list name the index.
    """
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return [load_image(t, color) for t in images], False
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("expected at least one image, got an empty list")
        loaded = []
        for index, item in enumerate(images):
            try:
                loaded.append(load_image(item, color))
            except (ValueError, TypeError, FileNotFoundError) as error:
                raise type(error)(f"image {index}: {error}") from None
        return loaded, False
    return [load_image(images, color)], True


def image_size(pixels: Pixels) -> tuple[int, int]:
    """``(height, width)`` of pixels returned by :func:`load_image`."""
    return tuple(pixels.shape[-2:]) if isinstance(pixels, torch.Tensor) else tuple(pixels.shape[:2])

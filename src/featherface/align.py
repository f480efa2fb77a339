"""Five-point face alignment: a similarity transform onto the ArcFace 112×112 template."""

from __future__ import annotations

import cv2
import numpy as np

#: Left eye, right eye, nose tip, left and right mouth corners in a 112×112 crop (ArcFace).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    ``src``, ``dst``: ``(K, 2)`` points. Returns the ``2×3`` matrix (Umeyama's closed form).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    variance = (src_c**2).sum() / len(src)
    scale = (singular * sign).sum() / variance if variance > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_faces(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp each face to a ``size × size`` crop with its 5 landmarks on the ArcFace template.

    Args:
        image: ``H×W×3`` uint8 image.
        landmarks: ``(N, 5, 2)`` points in image pixels (left eye, right eye, nose, mouth corners).
        size: output side in pixels; the template is scaled by ``size / 112``.

    Returns:
        ``(N, size, size, 3)`` uint8 crops, in the channel order of ``image``.
    """
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    template = ARCFACE_TEMPLATE * (size / 112.0)
    crops = np.empty((len(landmarks), size, size, 3), dtype=np.uint8)
    for i, points in enumerate(landmarks):
        matrix = similarity_transform(points, template)
        crops[i] = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
    return crops

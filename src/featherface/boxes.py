"""Encoding and decoding of boxes and landmarks against priors (RetinaFace convention)."""

from __future__ import annotations

import torch

Variances = tuple[float, float]
DEFAULT_VARIANCES: Variances = (0.1, 0.2)


def decode_boxes(
    loc: torch.Tensor, priors: torch.Tensor, variances: Variances = DEFAULT_VARIANCES
) -> torch.Tensor:
    """Regression ``(..., P, 4)`` → boxes ``(..., P, 4)`` as normalised ``x1 y1 x2 y2``.

    ``centre = prior_c + loc_xy·v0·prior_wh``, ``size = prior_wh·exp(loc_wh·v1)``.
    """
    centres = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
    sizes = priors[..., 2:] * torch.exp(loc[..., 2:] * variances[1])
    return torch.cat((centres - sizes / 2, centres + sizes / 2), dim=-1)


def encode_boxes(
    boxes: torch.Tensor, priors: torch.Tensor, variances: Variances = DEFAULT_VARIANCES
) -> torch.Tensor:
    """Inverse of :func:`decode_boxes`: normalised ``x1 y1 x2 y2`` ``(..., P, 4)`` → regression targets."""
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2
    sizes = boxes[..., 2:] - boxes[..., :2]
    offsets = (centres - priors[..., :2]) / (variances[0] * priors[..., 2:])
    scales = torch.log(sizes / priors[..., 2:]) / variances[1]
    return torch.cat((offsets, scales), dim=-1)


def decode_landmarks(
    landms: torch.Tensor, priors: torch.Tensor, variances: Variances = DEFAULT_VARIANCES
) -> torch.Tensor:
    """Regression ``(..., P, 10)`` → five normalised points ``(..., P, 10)`` as ``x0 y0 … x4 y4``."""
    points = landms.unflatten(-1, (5, 2))
    decoded = priors[..., None, :2] + points * variances[0] * priors[..., None, 2:]
    return decoded.flatten(-2)


def encode_landmarks(
    points: torch.Tensor, priors: torch.Tensor, variances: Variances = DEFAULT_VARIANCES
) -> torch.Tensor:
    """Inverse of :func:`decode_landmarks`: normalised points ``(..., P, 10)`` → regression targets."""
    offsets = (points.unflatten(-1, (5, 2)) - priors[..., None, :2]) / (variances[0] * priors[..., None, 2:])
    return offsets.flatten(-2)

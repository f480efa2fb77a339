"""MixUp, CutMix and Mosaic between the images of a batch, with their faces."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from featherface.training.data import Target


def _concat(a: Target, b: Target) -> Target:
    return Target(
        torch.cat((a.boxes, b.boxes)),
        torch.cat((a.landmarks, b.landmarks)),
        torch.cat((a.has_landmarks, b.has_landmarks)),
        a.labeled and b.labeled,
    )


def mixup_pair(
    image_a: torch.Tensor, target_a: Target, image_b: torch.Tensor, target_b: Target, lam: float
) -> tuple[torch.Tensor, Target]:
    """``lam·a + (1 − lam)·b`` for ``(3, H, W)`` images; the faces of both are kept."""
    return lam * image_a + (1.0 - lam) * image_b, _concat(target_a, target_b)


def cutmix_pair(
    image_a: torch.Tensor,
    target_a: Target,
    image_b: torch.Tensor,
    target_b: Target,
    region: tuple[int, int, int, int],
) -> tuple[torch.Tensor, Target]:
    """Paste ``region = (x0, y0, x1, y1)`` (pixels, end exclusive) of ``b`` onto ``a``.

    Faces of ``a`` whose centre lies in the region are dropped; faces of ``b`` whose centre lies in
    it are clipped to it and keep their landmarks only when all five points are inside.
    """
    x0, y0, x1, y1 = region
    image = image_a.clone()
    image[:, y0:y1, x0:x1] = image_b[:, y0:y1, x0:x1]

    def centre_inside(boxes: torch.Tensor) -> torch.Tensor:
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        return (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)

    keep_a = ~centre_inside(target_a.boxes)
    keep_b = centre_inside(target_b.boxes)
    lows = torch.tensor([x0, y0], dtype=target_b.boxes.dtype, device=target_b.boxes.device)
    highs = torch.tensor([x1, y1], dtype=target_b.boxes.dtype, device=target_b.boxes.device)
    boxes_b = torch.maximum(torch.minimum(target_b.boxes[keep_b], highs.repeat(2)), lows.repeat(2))
    points_b = target_b.landmarks[keep_b]
    points_inside = ((points_b >= lows) & (points_b < highs)).all(dim=-1).all(dim=-1)
    a = Target(
        target_a.boxes[keep_a], target_a.landmarks[keep_a], target_a.has_landmarks[keep_a], target_a.labeled
    )
    b = Target(boxes_b, points_b, target_b.has_landmarks[keep_b] & points_inside, target_b.labeled)
    return image, _concat(a, b)


def mosaic_tiles(images: torch.Tensor, targets: list[Target]) -> tuple[torch.Tensor, Target]:
    """Four ``(3, H, W)`` images, each shrunk to half size (area average), as the 2×2 tiles of one
    ``(3, H, W)`` image: first top left, then top right, bottom left, bottom right. Every face
    keeps its landmarks, scaled and moved with its tile."""
    if len(images) != 4 or len(targets) != 4:
        raise ValueError(f"a mosaic takes 4 images and 4 targets, got {len(images)} and {len(targets)}")
    height, width = images.shape[-2:]
    half_h, half_w = height // 2, width // 2
    tiles = F.interpolate(images, size=(half_h, half_w), mode="area")
    image = images.new_zeros(images.shape[1:])
    parts = []
    for index, (tile, target) in enumerate(zip(tiles, targets)):
        top, left = (index // 2) * half_h, (index % 2) * half_w
        image[:, top : top + half_h, left : left + half_w] = tile
        scale = target.boxes.new_tensor([half_w / width, half_h / height])
        offset = target.boxes.new_tensor([left, top])
        parts.append(
            Target(
                target.boxes * scale.repeat(2) + offset.repeat(2),
                target.landmarks * scale + offset,
                target.has_landmarks,
                target.labeled,
            )
        )
    return image, functools.reduce(_concat, parts)


class BatchMix:
    """Per image, with probability ``mixup`` blend it with a partner from the same batch
    (``lam ~ Beta(beta, beta)``), with probability ``cutmix`` paste a random rectangle of the
    partner (area fraction ``~ U(0, 1)``), or with probability ``mosaic`` replace it by the 2×2
    :func:`mosaic_tiles` of itself and three partners at half size (faces halved: more small faces,
    in new company). Image ``i`` pairs with ``(i + k·shift) mod B`` (``k`` = 1, 2, 3) for a random
    ``shift`` in ``[1, B)``: never with itself for MixUp and CutMix; a mosaic repeats an image
    where ``2·shift`` or ``3·shift`` is a multiple of ``B`` (a batch of fewer than 4 images, or
    ``shift = B/2``)."""

    def __init__(
        self, mixup: float = 0.0, cutmix: float = 0.0, beta: float = 1.5, mosaic: float = 0.0
    ) -> None:
        if mixup < 0 or cutmix < 0 or mosaic < 0 or mixup + cutmix + mosaic > 1:
            raise ValueError(
                f"mixup ({mixup}), cutmix ({cutmix}) and mosaic ({mosaic}) are probabilities whose sum "
                "is at most 1"
            )
        self.mixup = mixup
        self.cutmix = cutmix
        self.mosaic = mosaic
        self.beta = beta

    @property
    def enabled(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0 or self.mosaic > 0

    def __call__(
        self, images: torch.Tensor, targets: list[Target], rng: np.random.Generator
    ) -> tuple[torch.Tensor, list[Target]]:
        """Mix a float batch ``(B, 3, H, W)`` and its per-image targets (pixels of the batch)."""
        if not self.enabled or len(targets) < 2:
            return images, targets
        height, width = images.shape[-2:]
        count = len(targets)
        shift = int(rng.integers(1, count))
        mixed, mixed_targets = images.clone(), list(targets)
        for i in range(count):
            j = (i + shift) % count
            draw = rng.random()
            if draw >= self.mixup + self.cutmix + self.mosaic:
                continue
            if draw >= self.mixup + self.cutmix:
                members = [(i + k * shift) % count for k in range(4)]
                mixed[i], mixed_targets[i] = mosaic_tiles(images[members], [targets[m] for m in members])
                continue
            if draw < self.mixup:
                lam = float(rng.beta(self.beta, self.beta))
                mixed[i], mixed_targets[i] = mixup_pair(images[i], targets[i], images[j], targets[j], lam)
                continue
            ratio = np.sqrt(rng.uniform(0.0, 1.0))
            cut_w, cut_h = int(width * ratio), int(height * ratio)
            cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
            region = (
                max(cx - cut_w // 2, 0),
                max(cy - cut_h // 2, 0),
                min(cx + cut_w // 2, width),
                min(cy + cut_h // 2, height),
            )
            if region[2] > region[0] and region[3] > region[1]:
                mixed[i], mixed_targets[i] = cutmix_pair(images[i], targets[i], images[j], targets[j], region)
        return mixed, mixed_targets

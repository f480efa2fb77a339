"""MixUp and CutMix between the images of a batch, with their faces."""

from __future__ import annotations

import numpy as np
import torch

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


class BatchMix:
    """Per image, with probability ``mixup`` blend it with a partner from the same batch
    (``lam ~ Beta(beta, beta)``), or with probability ``cutmix`` paste a random rectangle of the
    partner (area fraction ``~ U(0, 1)``). Image ``i`` pairs with ``(i + shift) mod B`` for a random
    ``shift`` in ``[1, B)``, never with itself."""

    def __init__(self, mixup: float = 0.0, cutmix: float = 0.0, beta: float = 1.5) -> None:
        if mixup < 0 or cutmix < 0 or mixup + cutmix > 1:
            raise ValueError(
                f"mixup ({mixup}) and cutmix ({cutmix}) are probabilities whose sum is at most 1"
            )
        self.mixup = mixup
        self.cutmix = cutmix
        self.beta = beta

    @property
    def enabled(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

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
            if draw >= self.mixup + self.cutmix:
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

"""The teacher's pseudo ground truth for images that have no labels."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from featherface.postprocess import postprocess
from featherface.training.data import Target

ModelOutput = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def pseudo_label(
    targets: Sequence[Target],
    teacher: ModelOutput,
    priors: torch.Tensor,
    image_size: tuple[int, int],
    score_threshold: float = 0.5,
    nms_threshold: float = 0.4,
) -> list[Target]:
    """Replace every unlabelled target by the teacher's detections of that image.

    Args:
        targets: one per image; those with ``labeled=False`` are replaced.
        teacher: the teacher's raw outputs for the batch, ``(B, P, 4)``, ``(B, P, 2)``, ``(B, P, 10)``.
        priors: ``(P, 4)`` priors of the batch size ``image_size = (H, W)``.
        score_threshold: detections scoring at least this become faces (with the teacher's landmarks).

    Returns:
        targets in batch pixels; labelled ones are returned unchanged.
    """
    unlabeled = [i for i, t in enumerate(targets) if not t.labeled]
    if not unlabeled:
        return list(targets)
    index = torch.tensor(unlabeled, device=teacher[0].device)
    detections = postprocess(
        *(out[index] for out in teacher),
        priors,
        image_size,
        score_threshold=score_threshold,
        nms_threshold=nms_threshold,
    )
    result = list(targets)
    for i, found in zip(unlabeled, detections):
        result[i] = Target(
            found.boxes,
            found.landmarks,
            torch.ones(found.boxes.shape[0], dtype=torch.bool, device=found.boxes.device),
            labeled=True,
        )
    return result

"""Prior matching: which prior learns which face, and the encoded regression targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from featherface.boxes import DEFAULT_VARIANCES, Variances, encode_boxes, encode_landmarks
from featherface.training.data import Target

#: IoU at which a prior becomes a positive for a face (RetinaFace).
IOU_THRESHOLD = 0.35
#: A face forces its best prior to match it when their IoU is at least this.
FORCE_MATCH_MIN_IOU = 0.2


def prior_corners(priors: torch.Tensor) -> torch.Tensor:
    """``(P, 4)`` priors ``cx cy w h`` → ``x1 y1 x2 y2``."""
    return torch.cat((priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2), dim=1)


def match_priors(
    boxes: torch.Tensor,
    priors: torch.Tensor,
    iou_threshold: float = IOU_THRESHOLD,
    force_min_iou: float = FORCE_MATCH_MIN_IOU,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign faces to priors.

    Args:
        boxes: ``(N, 4)`` faces, normalised ``x1 y1 x2 y2``.
        priors: ``(P, 4)`` priors, normalised ``cx cy w h``.
        iou_threshold: a prior whose best IoU with any face reaches this is positive for that face.
        force_min_iou: each face's best prior is positive for that face whatever the threshold, if
            their IoU is at least this; when faces share a best prior the later face keeps it.

    Returns:
        ``positive (P,)`` bool and ``matched (P,)`` long, the face index of each prior (meaningful
        where positive).
    """
    num_priors = priors.shape[0]
    if boxes.shape[0] == 0:
        return torch.zeros(num_priors, dtype=torch.bool, device=priors.device), torch.zeros(
            num_priors, dtype=torch.long, device=priors.device
        )
    iou = box_iou(boxes, prior_corners(priors))
    best_prior_iou, best_prior = iou.max(dim=1)
    best_face_iou, best_face = iou.max(dim=0)
    forced = best_prior_iou >= force_min_iou
    forced_priors = best_prior[forced]
    forced_faces = torch.arange(boxes.shape[0], device=boxes.device)[forced]
    best_face = best_face.scatter_reduce(0, forced_priors, forced_faces, reduce="amax", include_self=False)
    best_face_iou = best_face_iou.index_fill(0, forced_priors, 2.0)
    return best_face_iou >= iou_threshold, best_face


@dataclass
class EncodedTargets:
    """Per-prior training targets of a batch: ``labels (B, P)`` (1 face, 0 background), ``boxes (B, P, 4)``
    and ``landmarks (B, P, 10)`` encoded against the priors, ``landmark_mask (B, P)`` (positive priors
    whose face has landmarks)."""

    labels: torch.Tensor
    boxes: torch.Tensor
    landmarks: torch.Tensor
    landmark_mask: torch.Tensor


def encode_targets(
    targets: Sequence[Target],
    priors: torch.Tensor,
    image_size: tuple[int, int],
    iou_threshold: float = IOU_THRESHOLD,
    force_min_iou: float = FORCE_MATCH_MIN_IOU,
    variances: Variances = DEFAULT_VARIANCES,
) -> EncodedTargets:
    """Match every image's faces (pixels of an ``image_size = (H, W)`` batch) to ``priors (P, 4)``."""
    height, width = image_size
    scale = torch.tensor([width, height], dtype=torch.float32, device=priors.device)
    labels, boxes, landmarks, masks = [], [], [], []
    for target in targets:
        face_boxes = target.boxes.to(priors.device, torch.float32) / scale.repeat(2)
        face_points = target.landmarks.to(priors.device, torch.float32).reshape(-1, 10) / scale.repeat(5)
        positive, matched = match_priors(face_boxes, priors, iou_threshold, force_min_iou)
        if face_boxes.shape[0] == 0:
            face_boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=priors.device)
            face_points = torch.zeros(1, 10, device=priors.device)
            has = torch.zeros(1, dtype=torch.bool, device=priors.device)
        else:
            has = target.has_landmarks.to(priors.device)
        labels.append(positive.long())
        boxes.append(encode_boxes(face_boxes[matched], priors, variances))
        landmarks.append(encode_landmarks(face_points[matched], priors, variances))
        masks.append(positive & has[matched])
    return EncodedTargets(torch.stack(labels), torch.stack(boxes), torch.stack(landmarks), torch.stack(masks))

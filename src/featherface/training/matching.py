"""Prior matching: which prior learns which face, and the encoded regression targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

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
    valid = torch.ones(1, boxes.shape[0], dtype=torch.bool, device=boxes.device)
    positive, matched = match_priors_batch(boxes[None], valid, priors, iou_threshold, force_min_iou)
    return positive[0], matched[0]


def _batched_iou(boxes: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """IoU of ``(B, N, 4)`` boxes with ``(P, 4)`` boxes (all ``x1 y1 x2 y2``) → ``(B, N, P)``.

    Coordinate by coordinate (no trailing axis of 2 to broadcast over): the same arithmetic as
    ``torchvision.ops.box_iou``, and the same values.
    """
    x1, y1, x2, y2 = (boxes[..., k, None] for k in range(4))
    area_boxes = (x2 - x1) * (y2 - y1)
    area_corners = (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])
    width = (torch.min(x2, corners[:, 2]) - torch.max(x1, corners[:, 0])).clamp(min=0)
    height = (torch.min(y2, corners[:, 3]) - torch.max(y1, corners[:, 1])).clamp(min=0)
    inter = width * height
    return inter / (area_boxes + area_corners - inter)


def match_priors_batch(
    boxes: torch.Tensor,
    valid: torch.Tensor,
    priors: torch.Tensor,
    iou_threshold: float = IOU_THRESHOLD,
    force_min_iou: float = FORCE_MATCH_MIN_IOU,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`match_priors` for a batch at once, without a host sync: ``boxes (B, N, 4)`` padded,
    ``valid (B, N)`` marking the real faces. Returns ``positive (B, P)`` and ``matched (B, P)``."""
    batch, num_faces = valid.shape
    num_priors = priors.shape[0]
    if num_faces == 0:
        return (
            torch.zeros(batch, num_priors, dtype=torch.bool, device=priors.device),
            torch.zeros(batch, num_priors, dtype=torch.long, device=priors.device),
        )
    iou = _batched_iou(boxes, prior_corners(priors)).masked_fill(~valid[..., None], -1.0)
    best_prior_iou, best_prior = iou.max(dim=2)
    best_face_iou, best_face = iou.max(dim=1)
    faces = torch.arange(num_faces, device=boxes.device).expand(batch, num_faces)
    forcing = torch.where(valid & (best_prior_iou >= force_min_iou), faces, -1)
    slots = best_prior + torch.arange(batch, device=boxes.device)[:, None] * num_priors
    forced_face = torch.full((batch * num_priors,), -1, dtype=torch.long, device=boxes.device)
    forced_face = forced_face.scatter_reduce(0, slots.flatten(), forcing.flatten(), reduce="amax")
    forced_face = forced_face.view(batch, num_priors)
    forced = forced_face >= 0
    best_face = torch.where(forced, forced_face, best_face)
    best_face_iou = best_face_iou.masked_fill(forced, 2.0)
    return best_face_iou >= iou_threshold, best_face


@dataclass
class EncodedTargets:
    """Per-prior training targets of a batch: ``labels (B, P)`` (1 face, 0 background), ``boxes (B, P, 4)``
    and ``landmarks (B, P, 10)`` encoded against the priors, ``landmark_mask (B, P)`` (positive priors
    whose face has landmarks) and ``face_share (B, P)``: 1 / (positive priors of the same face) on
    positives, 0 elsewhere, so each matched face's shares add up to 1 (``None`` when not computed)."""

    labels: torch.Tensor
    boxes: torch.Tensor
    landmarks: torch.Tensor
    landmark_mask: torch.Tensor
    face_share: torch.Tensor | None = None


#: Face × prior IoU values computed at once: a batch is matched in groups of images this size.
MAX_IOU_ELEMENTS = 2**24


def _groups(counts: list[int], slots: int, max_padding: float = 1.5) -> list[list[int]]:
    """Image indices in groups of similar face counts (ascending), each padded to its largest count
    (a face-less image takes one slot): at most ``slots`` slots per group (one image at least), and
    at most ``max_padding`` times the slots its images need alone."""
    groups: list[list[int]] = [[]]
    needed = 0
    for image in sorted(range(len(counts)), key=counts.__getitem__):
        size = max(counts[image], 1)
        padded = (len(groups[-1]) + 1) * size
        if groups[-1] and (padded > slots or padded > max_padding * (needed + size)):
            groups.append([])
            needed = 0
        groups[-1].append(image)
        needed += size
    return groups


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; a host-to-accelerator copy does not wait for the device."""
    return tensor.to(device, non_blocking=tensor.device.type == "cpu" and device.type != "cpu")


def _joined(parts: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """``parts`` concatenated on ``device``: one transfer when they share a device."""
    if len({part.device for part in parts}) == 1:
        return _to(torch.cat(parts), device)
    return torch.cat([_to(part, device) for part in parts])


def _encode_group(
    targets: Sequence[Target],
    priors: torch.Tensor,
    scale: torch.Tensor,
    iou_threshold: float,
    force_min_iou: float,
    variances: Variances,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Labels, boxes, landmarks, landmark mask and face shares of ``targets``, their faces padded
    to one count.

    A padding slot holds the box ``0 0 1 1`` and zero landmarks, so its encoding stays finite.
    """
    device = priors.device
    counts = [target.boxes.shape[0] for target in targets]
    images, most = len(targets), max(max(counts), 1)
    boxes = torch.zeros(images * most, 4, device=device)
    boxes[:, 2:] = 1.0
    points = torch.zeros(images * most, 10, device=device)
    has = torch.zeros(images * most, dtype=torch.bool, device=device)
    if sum(counts):
        rows = [i * most + k for i, count in enumerate(counts) for k in range(count)]
        slots = _to(torch.tensor(rows), device)
        face_boxes = _joined([t.boxes for t in targets], device).float() / scale.repeat(2)
        face_points = _joined([t.landmarks for t in targets], device).float().reshape(-1, 10)
        boxes = boxes.index_copy(0, slots, face_boxes)
        points = points.index_copy(0, slots, face_points / scale.repeat(5))
        has = has.index_copy(0, slots, _joined([t.has_landmarks for t in targets], device))
    valid = _to(torch.arange(most) < torch.tensor(counts)[:, None], device)
    boxes, points, has = boxes.view(images, most, 4), points.view(images, most, 10), has.view(images, most)
    positive, matched = match_priors_batch(boxes, valid, priors, iou_threshold, force_min_iou)
    matched_boxes = boxes.gather(1, matched[..., None].expand(-1, -1, 4))
    matched_points = points.gather(1, matched[..., None].expand(-1, -1, 10))
    priors_per_face = torch.zeros(images, most, device=device).scatter_add_(1, matched, positive.float())
    face_share = torch.where(positive, 1.0 / priors_per_face.gather(1, matched).clamp(min=1), 0.0)
    return (
        positive.long(),
        encode_boxes(matched_boxes, priors, variances),
        encode_landmarks(matched_points, priors, variances),
        positive & has.gather(1, matched),
        face_share,
    )


def encode_targets(
    targets: Sequence[Target],
    priors: torch.Tensor,
    image_size: tuple[int, int],
    iou_threshold: float = IOU_THRESHOLD,
    force_min_iou: float = FORCE_MATCH_MIN_IOU,
    variances: Variances = DEFAULT_VARIANCES,
) -> EncodedTargets:
    """Match every image's faces (pixels of an ``image_size = (H, W)`` batch) to ``priors (P, 4)``.

    Images are matched in a few groups of similar face counts, each in one pass over its faces
    padded to one count (at most :data:`MAX_IOU_ELEMENTS` IoU values). On a GPU nothing waits
    for the device: targets may stay on the host, and each group moves its faces in one
    non-blocking copy per field.
    """
    height, width = image_size
    scale = _to(torch.tensor([width, height], dtype=torch.float32), priors.device)
    groups = _groups([target.boxes.shape[0] for target in targets], MAX_IOU_ELEMENTS // priors.shape[0])
    encoded = [
        _encode_group([targets[i] for i in group], priors, scale, iou_threshold, force_min_iou, variances)
        for group in groups
    ]
    order = torch.tensor([i for group in groups for i in group])
    restore = _to(torch.empty_like(order).scatter_(0, order, torch.arange(len(order))), priors.device)
    return EncodedTargets(*(torch.cat(parts).index_select(0, restore) for parts in zip(*encoded)))

"""Decode raw model outputs into per-image detections: threshold, top-k, batched NMS."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms

from featherface.boxes import DEFAULT_VARIANCES, Variances, decode_boxes, decode_landmarks


@dataclass(frozen=True)
class Detections:
    """Detections of one image in network-input pixels, sorted by descending score.

    ``boxes (N, 4)`` as ``x1 y1 x2 y2``, ``scores (N,)``, ``landmarks (N, 5, 2)``.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    landmarks: torch.Tensor


def postprocess(
    loc: torch.Tensor,
    conf_logits: torch.Tensor,
    landms: torch.Tensor,
    priors: torch.Tensor,
    input_size: tuple[int, int],
    score_threshold: float = 0.5,
    nms_threshold: float = 0.4,
    top_k: int = 5000,
    max_faces: int = 750,
    variances: Variances = DEFAULT_VARIANCES,
    valid: torch.Tensor | None = None,
) -> list[Detections]:
    """Turn a batch of raw outputs into detections, one :class:`Detections` per image.

    Args:
        loc: box regression ``(B, P, 4)``.
        conf_logits: class logits ``(B, P, 2)`` (column 1 is "face").
        landms: landmark regression ``(B, P, 10)``.
        priors: ``(P, 4)`` priors for the padded input of size ``input_size = (H, W)``.
        score_threshold: keep priors whose face probability is at least this.
        nms_threshold: IoU above which the lower-scoring box is suppressed. IoU uses the
            "+1 pixel" convention of the original RetinaFace / FeatherFace code.
        top_k: at most this many candidates per image enter NMS.
        max_faces: at most this many detections per image are returned.
        valid: optional ``(B, P)`` bool mask; priors marked ``False`` (e.g. in the padding of a
            padded batch) are never detected.

    All images are suppressed in one ``torchvision.ops.batched_nms`` call (image index as group).
    """
    batch, num_priors = conf_logits.shape[:2]
    height, width = input_size
    scores = torch.softmax(conf_logits.float(), dim=-1)[..., 1]
    if valid is not None:
        scores = scores.masked_fill(~valid, -1.0)
    k = min(top_k, num_priors)
    top_scores, top_index = scores.topk(k, dim=1, sorted=True)
    keep_mask = top_scores >= score_threshold
    image_index = torch.arange(batch, device=scores.device)[:, None].expand(batch, k)[keep_mask]
    prior_index = top_index[keep_mask]
    cand_scores = top_scores[keep_mask]
    cand_priors = priors[prior_index]
    scale = torch.tensor([width, height], dtype=torch.float32, device=scores.device)
    boxes = decode_boxes(loc[image_index, prior_index].float(), cand_priors, variances) * scale.repeat(2)
    points = decode_landmarks(landms[image_index, prior_index].float(), cand_priors, variances)
    points = points.reshape(-1, 5, 2) * scale
    plus_one = torch.tensor([0.0, 0.0, 1.0, 1.0], device=boxes.device)
    kept = batched_nms(boxes + plus_one, cand_scores, image_index, nms_threshold)
    kept_image = image_index[kept]
    results = []
    for i in range(batch):
        mine = kept[kept_image == i][:max_faces]
        results.append(Detections(boxes[mine], cand_scores[mine], points[mine]))
    return results

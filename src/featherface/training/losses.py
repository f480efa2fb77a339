"""Losses: the RetinaFace MultiBox loss and the distillation terms, combined by named weights.

Terms (each a scalar, logged under its name):

- ``loc``: smooth-L1 on encoded boxes of positive priors, summed, divided by the positives.
- ``cls``: cross-entropy on positives and hard negatives (``neg_pos_ratio`` per positive), divided
  by the positives.
- ``landm``: smooth-L1 on encoded landmarks of positives whose face has landmarks, divided by them.
- ``kd_cls``: KL(teacher ‖ student) of class distributions softened by ``T``, times ``T²``, mean
  over priors, or the sum of separate means over groups of priors (see :func:`kd_class_loss`).
- ``kd_box`` / ``kd_landm``: smooth-L1 between student and teacher regression outputs on the
  priors the teacher scores at least ``teacher_conf_threshold``, divided by their number.
- ``kd_feat``: mean squared error between the student's neck features through 1×1 adapters and
  the teacher's, averaged over levels.

With ``face_balance`` > 0 the positive priors in ``loc``, ``cls`` and ``landm`` are weighted by
their face's share instead of counting once (see :func:`positive_weights`): at 1, a small face
that matches one prior weighs as much as a large face that matches ten.

The total is ``Σ w·term`` over the ground-truth terms when training, and
``(1 − alpha)·Σ_gt + alpha·Σ_kd`` when distilling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from featherface.training.matching import EncodedTargets

ModelOutput = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

GT_TERMS = ("loc", "cls", "landm")
KD_TERMS = ("kd_cls", "kd_box", "kd_landm", "kd_feat")
LOSS_TERMS = GT_TERMS + KD_TERMS
#: RetinaFace weighs boxes twice; feature distillation is off unless given a weight.
DEFAULT_LOSS_WEIGHTS: Mapping[str, float] = {
    "loc": 2.0,
    "cls": 1.0,
    "landm": 1.0,
    "kd_cls": 1.0,
    "kd_box": 1.0,
    "kd_landm": 1.0,
    "kd_feat": 0.0,
}


def resolve_loss_weights(overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The default weights updated by ``overrides``; unknown names raise ``ValueError``."""
    weights = dict(DEFAULT_LOSS_WEIGHTS)
    unknown = sorted(set(overrides or {}) - set(LOSS_TERMS))
    if unknown:
        raise ValueError(f"unknown loss terms {unknown}; the terms are {list(LOSS_TERMS)}")
    weights.update({k: float(v) for k, v in (overrides or {}).items()})
    negative = sorted(k for k, v in weights.items() if v < 0)
    if negative:
        raise ValueError(f"loss weights must be non-negative, got {negative}")
    return weights


def hard_negative_mask(
    loss: torch.Tensor, positive: torch.Tensor, neg_pos_ratio: float = 3.0
) -> torch.Tensor:
    """The hardest negatives of each image: ``neg_pos_ratio × positives`` priors with the highest
    background ``loss (B, P)`` among non-positives (ties broken by prior order). Returns ``(B, P)`` bool."""
    num_priors = loss.shape[1]
    ranked = loss.detach().masked_fill(positive, float("-inf"))
    rank = torch.sort(ranked, dim=1, descending=True, stable=True).indices.argsort(dim=1)
    num_pos = positive.sum(dim=1, keepdim=True)
    num_neg = torch.clamp((neg_pos_ratio * num_pos).long(), max=num_priors - num_pos)
    return (rank < num_neg) & ~positive


def masked_smooth_l1(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Smooth-L1 summed over the ``(B, P, k)`` values of the priors in ``mask (B, P)``, each
    prior's sum times ``weights (B, P)`` when given.

    Selected with ``where`` rather than boolean indexing, which would make the host wait for the
    device to count the priors; unselected priors may hold non-finite targets and add nothing.
    """
    per_prior = F.smooth_l1_loss(prediction, target, reduction="none").sum(dim=-1)
    if weights is not None:
        per_prior = per_prior * weights
    return torch.where(mask, per_prior, 0.0).sum()


def check_face_balance(face_balance: float) -> None:
    """Raise ``ValueError`` unless ``face_balance`` lies in ``[0, 1]``."""
    if not 0.0 <= face_balance <= 1.0:
        raise ValueError(f"face_balance must lie in [0, 1], got {face_balance}")


def positive_weights(targets: EncodedTargets, face_balance: float) -> torch.Tensor | None:
    """Weights ``(B, P)`` of the positive priors in the ground-truth terms.

    Each positive prior's weight is proportional to ``face_share ** face_balance`` (the share is
    1 / the positive priors of its face), scaled so that the weights of the batch add up to its
    number of positives. ``0``: ``None``, every positive prior counts once (RetinaFace); ``1``:
    every matched face weighs the same, however many priors it matches; in between, a blend.
    """
    check_face_balance(face_balance)
    if face_balance == 0.0:
        return None
    if targets.face_share is None:
        raise ValueError("face_balance > 0 needs targets.face_share, as encode_targets makes it")
    weights = targets.face_share.pow(face_balance)  # 0 stays 0 on the negatives
    num_pos = (targets.labels > 0).sum()
    return weights * (num_pos / weights.sum().clamp(min=torch.finfo(weights.dtype).tiny))


def multibox_loss(
    outputs: ModelOutput,
    targets: EncodedTargets,
    neg_pos_ratio: float = 3.0,
    weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``loc``, ``cls`` and ``landm`` terms for outputs ``(B, P, 4)``, ``(B, P, 2)``, ``(B, P, 10)``;
    ``weights (B, P)`` (see :func:`positive_weights`) weigh the positive priors, which otherwise
    count once each."""
    loc, conf, landms = outputs
    positive = targets.labels > 0
    num_pos = positive.sum().clamp(min=1)
    loc_loss = masked_smooth_l1(loc, targets.boxes, positive, weights) / num_pos
    has = targets.landmark_mask
    if weights is None:
        with_landmarks = has.sum().clamp(min=1)
    else:
        with_landmarks = torch.where(has, weights, 0.0).sum().clamp(min=torch.finfo(weights.dtype).tiny)
    landm_loss = masked_smooth_l1(landms, targets.landmarks, has, weights) / with_landmarks
    ce = F.cross_entropy(conf.reshape(-1, conf.shape[-1]), targets.labels.reshape(-1), reduction="none")
    ce = ce.view_as(targets.labels)
    selected = positive | hard_negative_mask(ce, positive, neg_pos_ratio)
    if weights is not None:
        ce = torch.where(positive, ce * weights, ce)
    cls_loss = torch.where(selected, ce, 0.0).sum() / num_pos
    return {"loc": loc_loss, "cls": cls_loss, "landm": landm_loss}


KD_CLS_NORMS = ("priors", "balanced", "false_positives")


def kd_class_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    foreground: torch.Tensor | None = None,
    false_positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))`` summed over classes, averaged over positions.

    With a ``foreground`` mask (e.g. the teacher-confident priors) the average is taken over the
    foreground and the background separately and the two means are added, so the few face
    priors weigh as much as the thousands of background ones. A ``false_positives`` mask (e.g.
    the priors the student scores as faces and the teacher does not) takes its own mean out of
    the background's, so those few priors weigh as much as the rest of the background too.
    Masks are ``(B, P)`` bool like the logits' first two dimensions; an empty group adds 0.
    """
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=-1)
    if foreground is None:
        if false_positives is not None:
            raise ValueError("false_positives are a part of the background: give a foreground mask too")
        return kl.mean() * temperature**2
    groups = [foreground]
    if false_positives is not None:
        groups.append(false_positives & ~foreground)
    groups.append(~torch.stack(groups).any(dim=0))
    means = [torch.where(group, kl, 0.0).sum() / group.sum().clamp(min=1) for group in groups]
    return torch.stack(means).sum() * temperature**2


def kd_regression_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 between ``(B, P, k)`` student and teacher outputs on priors ``mask (B, P)``, per prior."""
    return masked_smooth_l1(student, teacher, mask) / mask.sum().clamp(min=1)


def feature_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over levels of the MSE between adapted student and teacher feature maps of equal shape."""
    return torch.stack([F.mse_loss(s, t) for s, t in zip(student, teacher)]).mean()


@dataclass
class DetectionObjective:
    """Computes every loss term and their weighted total (see the module docstring).

    ``alpha`` weighs distillation against ground truth and ``temperature`` softens the class
    distributions; both only matter when a teacher output is given. ``kd_cls_norm`` averages the
    class KL over all priors (``"priors"``), over the teacher-confident priors and the others
    separately, adding the two means (``"balanced"``), or as ``"balanced"`` with a third mean over
    the student's false positives — background priors of the ground truth that the student scores
    at least ``teacher_conf_threshold`` and the teacher does not (``"false_positives"``; a prior
    matched to a labelled face is never one, even where the teacher misses the face).
    ``face_balance`` weighs the positive priors
    of the ground-truth terms by their face (:func:`positive_weights`).
    """

    weights: dict[str, float] = field(default_factory=resolve_loss_weights)
    alpha: float = 0.7
    temperature: float = 4.0
    teacher_conf_threshold: float = 0.5
    neg_pos_ratio: float = 3.0
    kd_cls_norm: str = "priors"
    face_balance: float = 0.0

    def __post_init__(self) -> None:
        if self.kd_cls_norm not in KD_CLS_NORMS:
            raise ValueError(f"kd_cls_norm must be one of {KD_CLS_NORMS}, got {self.kd_cls_norm!r}")
        check_face_balance(self.face_balance)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def __call__(
        self,
        student: ModelOutput,
        targets: EncodedTargets,
        teacher: ModelOutput | None = None,
        features: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Terms and ``loss`` (the total). ``features`` is ``(adapted student, teacher)`` neck maps."""
        weights = positive_weights(targets, self.face_balance)
        terms = multibox_loss(student, targets, self.neg_pos_ratio, weights)
        total = sum(self.weights[k] * terms[k] for k in GT_TERMS)
        if teacher is not None:
            confident = torch.softmax(teacher[1], dim=-1)[..., 1] >= self.teacher_conf_threshold
            foreground = confident if self.kd_cls_norm != "priors" else None
            false_positives = None
            if self.kd_cls_norm == "false_positives":
                student_face = torch.softmax(student[1].detach(), dim=-1)[..., 1]
                background = targets.labels == 0
                false_positives = (student_face >= self.teacher_conf_threshold) & ~confident & background
            terms["kd_cls"] = kd_class_loss(
                student[1], teacher[1], self.temperature, foreground, false_positives
            )
            terms["kd_box"] = kd_regression_loss(student[0], teacher[0], confident)
            terms["kd_landm"] = kd_regression_loss(student[2], teacher[2], confident)
            if features is not None:
                terms["kd_feat"] = feature_loss(*features)
            kd_total = sum(self.weights[k] * terms[k] for k in KD_TERMS if k in terms)
            total = (1.0 - self.alpha) * total + self.alpha * kd_total
        terms["loss"] = total
        return terms

"""Prior matching, hard negative mining, the MultiBox loss and the distillation terms, by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from featherface.boxes import decode_boxes, decode_landmarks
from featherface.priors import prior_boxes
from featherface.training import matching
from featherface.training.augment import TrainAugment
from featherface.training.data import LabeledFaceDataset, Target, collate
from featherface.training.labels import read_retinaface_labels
from featherface.training.losses import (
    DetectionObjective,
    hard_negative_mask,
    kd_class_loss,
    kd_regression_loss,
    multibox_loss,
    positive_weights,
    resolve_loss_weights,
)
from featherface.training.matching import EncodedTargets, encode_targets, match_priors
from tests.conftest import shared_path

# four priors (cx, cy, w, h): three quadrants and a small centre one
PRIORS = torch.tensor(
    [
        [0.25, 0.25, 0.5, 0.5],  # [0, 0, .5, .5]
        [0.75, 0.25, 0.5, 0.5],  # [.5, 0, 1, .5]
        [0.25, 0.75, 0.5, 0.5],  # [0, .5, .5, 1]
        [0.5, 0.5, 0.2, 0.2],  # [.4, .4, .6, .6]
    ]
)


def test_matching_thresholds_and_forced_best_prior():
    faces = torch.tensor(
        [
            [0.0, 0.0, 0.5, 0.4],  # IoU 0.2/0.25 = 0.8 with prior 0
            [0.45, 0.45, 0.55, 0.55],  # IoU 0.01/0.04 = 0.25 with prior 3: below 0.35, forced (≥ 0.2)
            [0.9, 0.9, 0.92, 0.92],  # overlaps no prior: never matched
        ]
    )
    positive, matched = match_priors(faces, PRIORS)
    assert positive.tolist() == [True, False, False, True]
    assert matched[0] == 0 and matched[3] == 1
    # without forcing the small face is lost; with a threshold above 0.8 only forcing remains
    positive, _ = match_priors(faces, PRIORS, force_min_iou=0.3)
    assert positive.tolist() == [True, False, False, False]
    positive, matched = match_priors(faces, PRIORS, iou_threshold=0.9)
    assert positive.tolist() == [True, False, False, True]


def test_faces_forcing_the_same_prior_leave_it_to_the_later_face():
    faces = torch.tensor(
        [
            [0.0, 0.0, 0.5, 0.45],  # IoU 0.9 with prior 0
            [0.0, 0.0, 0.3, 0.3],  # IoU 0.09/0.25 = 0.36 with prior 0, also its best prior
        ]
    )
    positive, matched = match_priors(faces, PRIORS)
    assert positive[0] and matched[0] == 1
    twins = torch.tensor([[0.5, 0.0, 1.0, 0.5], [0.5, 0.0, 1.0, 0.5]])
    _, matched = match_priors(twins, PRIORS)
    assert matched[1] == 1


def test_no_faces_means_all_background():
    positive, _ = match_priors(torch.zeros(0, 4), PRIORS)
    assert not positive.any()


def test_batched_iou_equals_torchvision_box_iou():
    gen = torch.Generator().manual_seed(0)
    corners = torch.rand(2, 7, 2, generator=gen)
    boxes = torch.cat((corners, corners + torch.rand(2, 7, 2, generator=gen) * 0.5), dim=-1)
    priors = matching.prior_corners(prior_boxes(64, 96))
    batched = matching._batched_iou(boxes, priors)
    for image in range(2):
        assert torch.equal(batched[image], box_iou(boxes[image], priors))


def test_a_batch_encodes_as_its_images_do_alone(monkeypatch):
    """Real WIDER faces (up to a crowd per image), a face-less image and landmarks on some faces."""
    labels = read_retinaface_labels(shared_path("data", "widerface_train1000", "label.txt"))[::40][:6]
    samples = list(LabeledFaceDataset(labels, TrainAugment(320), seed=2))
    targets = list(collate(samples).targets)
    gen = torch.Generator().manual_seed(1)
    targets[1] = Target(
        targets[1].boxes,
        torch.rand(len(targets[1].boxes), 5, 2, generator=gen) * 320,
        torch.arange(len(targets[1].boxes)) % 2 == 0,
    )
    targets[3] = Target(torch.zeros(0, 4), torch.zeros(0, 5, 2), torch.zeros(0, dtype=torch.bool))
    assert max(len(t.boxes) for t in targets) > 20
    priors = prior_boxes(320, 320)
    batched = encode_targets(targets, priors, (320, 320))
    alone = [encode_targets([target], priors, (320, 320)) for target in targets]
    monkeypatch.setattr(matching, "MAX_IOU_ELEMENTS", 1)  # one image per pass
    chunked = encode_targets(targets, priors, (320, 320))
    for field in ("labels", "boxes", "landmarks", "landmark_mask", "face_share"):
        expected = torch.cat([getattr(encoded, field) for encoded in alone])
        assert torch.equal(getattr(batched, field), expected), field
        assert torch.equal(getattr(chunked, field), expected), field
    assert batched.labels[1].any() and batched.landmark_mask[1].any() and not batched.labels[3].any()
    assert torch.isfinite(batched.boxes[3]).all()


def test_hard_negative_mining_picks_the_highest_losses_three_per_positive():
    loss = torch.tensor(
        [
            [0.1, 0.9, 0.5, 0.3, 0.8, 0.2],
            [0.1, 0.9, 0.5, 0.3, 0.8, 0.2],
            [0.1, 0.9, 0.5, 0.3, 0.8, 0.2],
        ]
    )
    positive = torch.tensor(
        [
            [False, False, False, False, True, False],  # 1 positive: 3 hardest negatives 0.9, 0.5, 0.3
            [True, False, False, False, True, False],  # 2 positives: 6 wanted, only 4 negatives exist
            [False] * 6,  # no positive: no negative either
        ]
    )
    mask = hard_negative_mask(loss, positive)
    assert mask.tolist() == [
        [False, True, True, True, False, False],
        [False, True, True, True, False, True],
        [False] * 6,
    ]
    assert hard_negative_mask(loss[:1], positive[:1], neg_pos_ratio=1).tolist() == [
        [False, True, False, False, False, False]
    ]


def test_multibox_loss_by_hand():
    ln3, ln7 = math.log(3), math.log(7)
    conf = torch.tensor([[[0.0, ln3], [0.0, 0.0], [0.0, ln3], [ln3, 0.0], [0.0, ln7]]])
    loc = torch.zeros(1, 5, 4)
    landms = torch.zeros(1, 5, 10)
    targets = EncodedTargets(
        labels=torch.tensor([[1, 0, 0, 0, 0]]),
        boxes=torch.tensor([[[0.5, -2.0, 0.0, 1.0]] * 5]),
        landmarks=torch.full((1, 5, 10), 3.0),
        landmark_mask=torch.zeros(1, 5, dtype=torch.bool),
    )
    terms = multibox_loss((loc, conf, landms), targets)
    # positive: -ln(3/4); the three hardest negatives: -ln(1/8), -ln(1/4), -ln(1/2); one positive
    assert terms["cls"].item() == pytest.approx(
        math.log(4 / 3) + math.log(8) + math.log(4) + math.log(2), abs=1e-5
    )
    # smooth-L1 of (0.5, -2, 0, 1) against 0: 0.125 + 1.5 + 0 + 0.5
    assert terms["loc"].item() == pytest.approx(2.125)
    # the face has no landmarks: no landmark loss whatever the prediction
    assert terms["landm"].item() == 0.0
    targets.landmark_mask[0, 0] = True
    # ten coordinates off by 3: smooth-L1 2.5 each
    assert multibox_loss((loc, conf, landms), targets)["landm"].item() == pytest.approx(25.0)


def test_encoded_targets_decode_back_to_the_faces():
    height, width = 320, 256
    priors = prior_boxes(height, width)
    boxes = torch.tensor([[40.0, 50.0, 80.0, 100.0], [150.0, 60.0, 250.0, 190.0], [10.0, 200.0, 14.0, 205.0]])
    points = torch.tensor(
        [
            [[50.0, 65], [70, 65], [60, 75], [52, 88], [68, 88]],
            [[170.0, 100], [220, 100], [200, 130], [175, 160], [215, 160]],
            [[0.0, 0]] * 5,
        ]
    )
    target = Target(boxes, points, torch.tensor([True, True, False]))
    encoded = encode_targets([target], priors, (height, width))
    positive = encoded.labels[0] > 0
    assert positive.sum() >= 2
    scale = torch.tensor([width, height] * 2)
    decoded = decode_boxes(encoded.boxes[0][positive], priors[positive]) * scale
    # every positive prior decodes to one of the faces exactly
    distances = (decoded[:, None] - boxes[None]).abs().amax(dim=-1).amin(dim=1)
    assert distances.max() < 1e-3
    with_landmarks = encoded.landmark_mask[0]
    assert with_landmarks.any() and not (with_landmarks & ~positive).any()
    decoded_points = decode_landmarks(encoded.landmarks[0][with_landmarks], priors[with_landmarks])
    decoded_points = decoded_points.view(-1, 5, 2) * torch.tensor([width, height])
    point_distances = (decoded_points[:, None] - points[None, :2]).abs().flatten(2).amax(-1).amin(1)
    assert point_distances.max() < 1e-3
    # the 4×5 px face matches nothing, so no prior decodes to it
    assert ((decoded - boxes[2]).abs().amax(dim=-1) > 1).all()
    # each matched face's priors share 1 between them; background priors have no share
    share = encoded.face_share[0]
    assert (share[~positive] == 0).all()
    owner = (decoded[:, None] - boxes[None]).abs().amax(dim=-1).argmin(dim=1)
    for face in range(2):
        counted = owner == face
        assert share[positive][counted].sum().item() == pytest.approx(1.0)
        assert torch.allclose(share[positive][counted], 1 / counted.sum().float())


def _two_faces_targets() -> EncodedTargets:
    """Face A owns prior 0, face B priors 1–3 (landmarks on prior 0 and 1); prior 4 is background."""
    return EncodedTargets(
        labels=torch.tensor([[1, 1, 1, 1, 0]]),
        boxes=torch.tensor(
            [[[1.0, 0, 0, 0], [0.5, 0, 0, 0], [0.5, 0, 0, 0], [0.5, 0, 0, 0], [9.0, 9, 9, 9]]]
        ),
        landmarks=torch.zeros(1, 5, 10),
        landmark_mask=torch.tensor([[True, True, False, False, False]]),
        face_share=torch.tensor([[1.0, 1 / 3, 1 / 3, 1 / 3, 0.0]]),
    )


def test_face_balance_weighs_every_face_alike_at_one():
    targets = _two_faces_targets()
    assert positive_weights(targets, 0.0) is None
    # shares 1, 1/3, 1/3, 1/3 add up to 2 faces; scaled to the 4 positives: 2, 2/3, 2/3, 2/3
    assert torch.allclose(positive_weights(targets, 1.0), torch.tensor([[2.0, 2 / 3, 2 / 3, 2 / 3, 0.0]]))
    # halfway: proportional to the square roots of the shares, still 4 in all
    half = positive_weights(targets, 0.5)
    root = torch.tensor([1.0, 3**-0.5, 3**-0.5, 3**-0.5, 0.0])
    assert torch.allclose(half[0], root * 4 / root.sum())
    outputs = (torch.zeros(1, 5, 4), torch.zeros(1, 5, 2), torch.ones(1, 5, 10))
    plain = multibox_loss(outputs, targets)
    balanced = multibox_loss(outputs, targets, weights=positive_weights(targets, 1.0))
    # smooth-L1 of 1 is 0.5, of 0.5 is 0.125: (0.5 + 3 × 0.125) / 4 priors, (2·0.5 + 3·(2/3)·0.125) / 4
    assert plain["loc"].item() == pytest.approx((0.5 + 3 * 0.125) / 4)
    assert balanced["loc"].item() == pytest.approx((2 * 0.5 + 2 * 0.125) / 4)
    # landmarks off by 1 on the two priors that have them: 10 × 0.5 each, a weighted mean
    assert plain["landm"].item() == pytest.approx(5.0)
    assert balanced["landm"].item() == pytest.approx(5.0)
    # every prior scores ln 2; the one background prior is the only hard negative
    ln2 = math.log(2)
    assert plain["cls"].item() == pytest.approx(5 * ln2 / 4)
    assert balanced["cls"].item() == pytest.approx((4 * ln2 + ln2) / 4)
    skewed = (
        torch.zeros(1, 5, 4),
        torch.tensor([[[0.0, 0.0]] + [[0.0, 5.0]] * 3 + [[5.0, 0.0]]]),
        outputs[2],
    )
    ce_face_a, ce_face_b, ce_background = ln2, math.log1p(math.exp(-5)), math.log1p(math.exp(-5))
    assert multibox_loss(skewed, targets, weights=positive_weights(targets, 1.0))[
        "cls"
    ].item() == pytest.approx((2 * ce_face_a + 3 * (2 / 3) * ce_face_b + ce_background) / 4, rel=1e-5)
    objective = DetectionObjective(face_balance=1.0)
    assert objective(skewed, targets)["loc"].item() == pytest.approx(balanced["loc"].item())
    with pytest.raises(ValueError, match=r"face_balance must lie in \[0, 1\], got 1.5"):
        DetectionObjective(face_balance=1.5)
    targets.face_share = None
    with pytest.raises(ValueError, match=r"needs targets\.face_share"):
        positive_weights(targets, 0.5)


def test_kd_class_loss_at_temperature_one_is_plain_kl():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 300, 2, generator=generator) * 3
    teacher = torch.randn(2, 300, 2, generator=generator) * 3
    expected = F.kl_div(
        F.log_softmax(student.view(-1, 2), -1),
        F.log_softmax(teacher.view(-1, 2), -1),
        reduction="batchmean",
        log_target=True,
    )
    assert kd_class_loss(student, teacher, 1.0).item() == pytest.approx(expected.item(), rel=1e-6)
    # temperature T: T² times the KL of the softened distributions
    softened = F.kl_div(
        F.log_softmax(student.view(-1, 2) / 4, -1),
        F.log_softmax(teacher.view(-1, 2) / 4, -1),
        reduction="batchmean",
        log_target=True,
    )
    assert kd_class_loss(student, teacher, 4.0).item() == pytest.approx(16 * softened.item(), rel=1e-6)
    assert kd_class_loss(teacher, teacher, 4.0).item() == pytest.approx(0.0, abs=1e-7)


def _per_prior_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) of each prior of a one-image ``(1, P, 2)`` pair, at temperature 1."""
    return F.kl_div(
        F.log_softmax(student[0], -1), F.log_softmax(teacher[0], -1), reduction="none", log_target=True
    ).sum(-1)


def _kd_cls_term(
    objective: DetectionObjective,
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The objective's ``kd_cls`` for class logits ``(1, P, 2)``, zero boxes and landmarks and
    ground-truth ``labels (1, P)`` (all background by default)."""
    priors = student.shape[1]
    targets = EncodedTargets(
        torch.zeros(1, priors, dtype=torch.long) if labels is None else labels,
        torch.zeros(1, priors, 4),
        torch.zeros(1, priors, 10),
        torch.ones(1, priors, dtype=torch.bool),
    )
    terms = objective(
        (torch.zeros(1, priors, 4), student, torch.zeros(1, priors, 10)),
        targets,
        (torch.zeros(1, priors, 4), teacher, torch.zeros(1, priors, 10)),
    )
    return terms["kd_cls"]


def test_balanced_kd_class_loss_adds_foreground_and_background_means():
    student = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.5, 0.5]]])
    teacher = torch.tensor([[[3.0, 0.0], [0.0, 0.0], [0.0, 5.0], [2.0, 0.0]]])
    foreground = torch.tensor([[False, False, True, True]])
    per_prior = _per_prior_kl(student, teacher)
    expected = per_prior[2:].mean() + per_prior[:2].mean()
    assert kd_class_loss(student, teacher, 1.0, foreground).item() == pytest.approx(expected.item(), rel=1e-6)
    assert kd_class_loss(student, teacher, 1.0).item() == pytest.approx(per_prior.mean().item(), rel=1e-6)
    # the objective takes the teacher-confident priors as the foreground
    objective = DetectionObjective(kd_cls_norm="balanced", temperature=1.0)
    confident = torch.softmax(teacher, -1)[..., 1] >= 0.5
    assert _kd_cls_term(objective, student, teacher).item() == pytest.approx(
        kd_class_loss(student, teacher, 1.0, confident).item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="kd_cls_norm"):
        DetectionObjective(kd_cls_norm="pixels")


def test_false_positive_kd_class_loss_averages_the_students_false_positives_apart():
    # priors: teacher face, student false positive, background, background, both face
    student = torch.tensor([[[0.0, 0.0], [0.0, 3.0], [1.0, 0.0], [2.0, 0.5], [0.0, 2.0]]])
    teacher = torch.tensor([[[0.0, 2.0], [4.0, 0.0], [3.0, 0.0], [2.0, 0.0], [0.0, 5.0]]])
    per_prior = _per_prior_kl(student, teacher)
    foreground = torch.tensor([[True, False, False, False, True]])
    student_faces = torch.tensor([[False, True, False, False, True]])
    expected = per_prior[[0, 4]].mean() + per_prior[1] + per_prior[2:4].mean()
    got = kd_class_loss(student, teacher, 1.0, foreground, student_faces)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # no false positive in the batch: the balanced loss
    none = torch.zeros_like(foreground)
    assert kd_class_loss(student, teacher, 1.0, foreground, none).item() == pytest.approx(
        kd_class_loss(student, teacher, 1.0, foreground).item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="foreground"):
        kd_class_loss(student, teacher, 1.0, None, student_faces)
    # the objective finds both masks at its confidence threshold (the student's scores detached)
    objective = DetectionObjective(kd_cls_norm="false_positives", temperature=1.0)
    logits = student.clone().requires_grad_()
    kd_cls = _kd_cls_term(objective, logits, teacher)
    assert kd_cls.item() == pytest.approx(expected.item(), rel=1e-6)
    kd_cls.backward()
    # the lone false positive's gradient is a whole mean's, not a fifth of the background's
    alone = torch.autograd.grad(
        F.kl_div(
            F.log_softmax(logits[0, 1], -1),
            F.log_softmax(teacher[0, 1], -1),
            reduction="sum",
            log_target=True,
        ),
        logits,
    )[0]
    assert torch.allclose(logits.grad[0, 1], alone[0, 1], atol=1e-6)
    # a prior matched to a labelled face is never a false positive: there it is background again
    labelled = torch.tensor([[0, 1, 0, 0, 0]])
    assert _kd_cls_term(objective, student, teacher, labelled).item() == pytest.approx(
        kd_class_loss(student, teacher, 1.0, foreground).item(), rel=1e-6
    )


def test_kd_regression_only_on_confident_priors():
    student = torch.zeros(1, 3, 4)
    teacher = torch.tensor([[[1.0, 1, 1, 1], [5.0, 5, 5, 5], [0.5, 0, 0, 0]]])
    mask = torch.tensor([[True, False, True]])
    # (4 × 0.5 + 0.125) / 2 confident priors
    assert kd_regression_loss(student, teacher, mask).item() == pytest.approx((2.0 + 0.125) / 2)


def test_objective_combines_named_terms_with_alpha():
    generator = torch.Generator().manual_seed(1)
    outputs = tuple(torch.randn(1, 5, n, generator=generator) for n in (4, 2, 10))
    teacher = tuple(torch.randn(1, 5, n, generator=generator) for n in (4, 2, 10))
    targets = EncodedTargets(
        torch.tensor([[1, 0, 0, 0, 0]]),
        torch.zeros(1, 5, 4),
        torch.zeros(1, 5, 10),
        torch.ones(1, 5, dtype=torch.bool),
    )
    weights = resolve_loss_weights({"loc": 3.0, "kd_box": 0.5})
    terms = DetectionObjective(weights, alpha=0.25, temperature=2.0, teacher_conf_threshold=0.0)(
        outputs, targets, teacher
    )
    gt = 3.0 * terms["loc"] + terms["cls"] + terms["landm"]
    kd = terms["kd_cls"] + 0.5 * terms["kd_box"] + terms["kd_landm"]
    assert terms["loss"].item() == pytest.approx((0.75 * gt + 0.25 * kd).item())
    plain = DetectionObjective(weights)(outputs, targets)
    assert set(plain) == {"loc", "cls", "landm", "loss"}
    assert plain["loss"].item() == pytest.approx(gt.item())
    with pytest.raises(ValueError, match="unknown loss terms"):
        resolve_loss_weights({"box": 1.0})
    with pytest.raises(ValueError, match="alpha"):
        DetectionObjective(alpha=1.5)

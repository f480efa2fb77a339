"""The training loop: exact resume after an interruption, checkpoints, log, export, body init."""

from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from featherface import create_model, featherface_v2
from featherface.models.registry import InputCfg, WeightsCfg
from featherface.training import (
    ImageFolderDataset,
    LabeledFaceDataset,
    TrainAugment,
    TrainConfig,
    Trainer,
    distill,
    load_body,
    make_loader,
    train,
)
from featherface.training.labels import read_retinaface_labels
from featherface.training.logs import read_log
from featherface.training.optim import ModelEma, warmup_cosine_factor

from .conftest import shared_path

IMAGE_SIZE = 128


def small_labeled_set(count: int = 4, seed: int = 0) -> LabeledFaceDataset:
    """The first ``count`` images of widerface_train1000 with the training augmentation."""
    labels = read_retinaface_labels(shared_path("data", "widerface_train1000", "label.txt"))[:count]
    return LabeledFaceDataset(labels, TrainAugment(IMAGE_SIZE), seed=seed)


class Interrupted(RuntimeError):
    """Raised by :class:`CrashingDataset` to simulate a crash."""


class CrashingDataset(LabeledFaceDataset):
    """Fails as soon as epoch ``crash_epoch`` asks for data, like a killed job."""

    crash_epoch = 1

    def __getitem__(self, index: int):
        if self.epoch == self.crash_epoch:
            raise Interrupted(f"simulated crash in epoch {self.epoch}")
        return super().__getitem__(index)


@pytest.fixture(scope="module")
def teacher(v1_checkpoint):
    return create_model("featherface_v1", checkpoint_path=v1_checkpoint)


def _student() -> torch.nn.Module:
    torch.manual_seed(0)
    return featherface_v2()


def _distill(teacher, student, dataset, output_dir, resume=None):
    """2 epochs × 2 steps with every random part of the loop switched on."""
    return distill(
        teacher,
        student,
        make_loader(dataset, 2, seed=5),
        epochs=2,
        ema=True,
        output_dir=output_dir,
        resume=resume,
        loss_weights={"kd_feat": 1.0},
        mixup=0.3,
        cutmix=0.3,
        mosaic=0.3,
        dropblock=0.1,
        progress=False,
    )


def test_two_steps_resume_two_steps_equals_four_steps(teacher, tmp_path):
    straight = _student()
    history = _distill(teacher, straight, small_labeled_set(), tmp_path / "straight")
    assert [r["step"] for r in history] == [2, 4]

    labels = small_labeled_set().labels
    with pytest.raises(Interrupted):
        _distill(teacher, _student(), CrashingDataset(labels, TrainAugment(IMAGE_SIZE)), tmp_path / "resumed")
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["step"] == 2
    assert not (tmp_path / "resumed" / "model.safetensors").exists()

    resumed = featherface_v2()  # a different initialisation: everything comes from the checkpoint
    resumed_history = _distill(teacher, resumed, small_labeled_set(), tmp_path / "resumed", resume=True)
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert [r["loss"] for r in resumed_history] == [r["loss"] for r in history]

    def steps(folder):
        return [
            (r["epoch"], r["step"], r["loss"]) for r in read_log(folder / "log.jsonl") if r["kind"] == "step"
        ]

    assert steps(tmp_path / "resumed") == steps(tmp_path / "straight")
    assert len(steps(tmp_path / "straight")) == 4


def test_outputs_log_checkpoint_and_export(tmp_path):
    model = _student()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = train(model, make_loader(small_labeled_set(), 2), epochs=1, output_dir=tmp_path, progress=False)
    assert len(history) == 1 and history[0]["images"] == 4
    record = history[0]
    assert {"loc", "cls", "landm", "loss", "lr", "seconds", "images_per_s"} <= set(record)
    assert record["loss"] == pytest.approx(2 * record["loc"] + record["cls"] + record["landm"], rel=1e-5)

    log = read_log(tmp_path / "log.jsonl")
    assert [r["kind"] for r in log] == ["step", "step", "epoch"]
    assert all({"epoch", "step", "loss", "loc", "cls", "landm", "lr"} <= set(r) for r in log)
    # warm-up of one epoch = 2 steps: lr 1e-3 · 1/2, then 1e-3 · 2/2
    assert [r["lr"] for r in log[:2]] == pytest.approx([5e-4, 1e-3])

    checkpoint = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "ema", "rng", "epoch", "history"} <= set(checkpoint)
    assert checkpoint["rng"][0]["torch"].dtype == torch.uint8

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["arch"] == "featherface_v2" and config["epochs"] == 1
    loaded = create_model("featherface_v2", checkpoint_path=tmp_path)
    changed = 0
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
        changed += not torch.equal(before[name], value)
    assert changed > 100
    assert not model.training
    with pytest.raises(RuntimeError, match="holds featherface_v2 weights, not featherface_v1"):
        create_model("featherface_v1", checkpoint_path=tmp_path)
    with pytest.raises(RuntimeError, match=r"folder without model\.safetensors"):
        create_model("featherface_v2", checkpoint_path=tmp_path / "checkpoints")


def test_save_every_writes_the_weights_of_those_epochs(tmp_path):
    model = _student()
    loader = make_loader(small_labeled_set(), 2)
    train(model, loader, epochs=3, ema=True, save_every=2, output_dir=tmp_path, progress=False)
    assert sorted(p.name for p in (tmp_path / "epochs").iterdir()) == ["epoch_002.safetensors"]
    at_two = create_model("featherface_v2", checkpoint_path=tmp_path / "epochs" / "epoch_002.safetensors")
    final = create_model("featherface_v2", checkpoint_path=tmp_path)
    pairs = zip(at_two.state_dict().values(), final.state_dict().values())
    assert any(not torch.equal(a, b) for a, b in pairs)  # epoch 3 moved the EMA on
    with pytest.raises(ValueError, match="save_every must be 0"):
        train(featherface_v2(), loader, epochs=1, save_every=-1)


def test_blank_frames_teach_only_through_the_distillation_terms(teacher, tmp_path):
    labels = read_retinaface_labels(shared_path("data", "widerface_train1000", "label.txt"))[:4]
    frames = LabeledFaceDataset(labels, TrainAugment(IMAGE_SIZE, blank=1.0), seed=0)
    history = distill(
        teacher,
        _student(),
        make_loader(frames, 2, seed=0),
        epochs=1,
        kd_cls_norm="balanced",
        freeze_bn=True,
        loss_weights={"kd_feat": 1.0},
        output_dir=tmp_path,
        progress=False,
    )
    # no face: no positive prior, so no box or landmark target and no mined negative
    assert history[0]["loc"] == history[0]["landm"] == history[0]["cls"] == 0
    assert history[0]["kd_cls"] > 0 and history[0]["kd_feat"] > 0 and np.isfinite(history[0]["loss"])


def test_unlabelled_images_need_a_teacher():
    dataset = ImageFolderDataset(shared_path("data", "dlib_faces"), TrainAugment(IMAGE_SIZE))
    with pytest.raises(ValueError, match="unlabelled images, which only distillation can use"):
        train(featherface_v2(), make_loader(dataset, 2), epochs=1, progress=False)


def test_bad_settings_are_refused():
    loader = make_loader(small_labeled_set(), 2)
    with pytest.raises(ValueError, match="amp=True needs a CUDA device"):
        train(featherface_v2(), loader, epochs=1, amp=True, device="cpu", progress=False)
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        train(featherface_v2(), loader, epochs=0)
    with pytest.raises(ValueError, match="unknown loss terms"):
        train(featherface_v2(), loader, epochs=1, loss_weights={"boxes": 1.0})
    with pytest.raises(ValueError, match="resume=True needs output_dir"):
        train(featherface_v2(), loader, epochs=1, resume=True, progress=False)
    rgb_teacher = featherface_v2()
    rgb_teacher.pretrained_cfg = WeightsCfg("rgb", 0, "MIT", "test", input=InputCfg(color_order="rgb"))
    with pytest.raises(ValueError, match="different inputs or priors"):
        distill(rgb_teacher, featherface_v2(), loader, epochs=1, progress=False)


def test_a_non_finite_loss_stops_training_before_the_step():
    model = featherface_v2()
    with torch.no_grad():
        model.heads.levels[0].cls.weight.fill_(float("nan"))
    before = {name: p.clone() for name, p in model.named_parameters()}
    with pytest.raises(FloatingPointError, match=r"the loss became nan at step 1 \(terms .*'cls': nan"):
        train(model, make_loader(small_labeled_set(), 2), epochs=1, progress=False)
    after = dict(model.named_parameters())
    del before["heads.levels.0.cls.weight"]  # NaN, never equal to itself
    assert all(torch.equal(value, after[name]) for name, value in before.items())


def test_a_step_the_grad_scaler_skips_still_advances_the_schedule_without_a_warning():
    model = _student()
    trainer = Trainer(model, make_loader(small_labeled_set(), 2), TrainConfig(epochs=1, progress=False))
    # the float32 loss times 2^127 overflows: the scaler skips the step, as mixed precision does
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)
    before = {name: p.clone() for name, p in model.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        record = trainer.train_step(next(iter(trainer.loader)))
    after = dict(model.named_parameters())
    assert all(torch.equal(value, after[name]) for name, value in before.items())
    assert trainer.scaler.get_scale() == 2.0**126
    assert record["lr"] == pytest.approx(0.5e-3)  # warm-up step 1 of 2
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_warmup_then_cosine_by_hand():
    factors = [warmup_cosine_factor(step, warmup_steps=2, total_steps=6, min_ratio=0.01) for step in range(7)]
    # warm-up 1/2, 2/2; then cosine from 1 at step 2 to 0.01 at step 6, halfway (0.505) at step 4
    assert factors == pytest.approx(
        [0.5, 1.0, 1.0, 0.01 + 0.99 * (1 + 2**-0.5) / 2, 0.505, 0.01 + 0.99 * (1 - 2**-0.5) / 2, 0.01]
    )


def test_body_from_imagenet_checkpoint_and_from_teacher(teacher, tmp_path):
    imagenet = shared_path("weights", "mobilenetv1_0.25_imagenet.tar")
    state = torch.load(imagenet, map_location="cpu", weights_only=True)["state_dict"]
    student = featherface_v2()
    load_body(student, imagenet)
    assert torch.equal(student.body.stage1[0][0].weight, state["module.stage1.0.0.weight"])
    assert torch.equal(student.body.stage3[1][4].running_var, state["module.stage3.1.4.running_var"])
    load_body(student, teacher)
    for name, value in teacher.body.state_dict().items():
        assert torch.equal(student.body.state_dict()[name], value), name
    with pytest.raises(FileNotFoundError, match="do not exist"):
        load_body(student, tmp_path / "missing.pth")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "head_only.pth")
    with pytest.raises(ValueError, match="no MobileNetV1 body weights"):
        load_body(student, tmp_path / "head_only.pth")


@pytest.mark.timeout(120)
def test_loader_workers_after_opencv_used_its_threads():
    """Forked loader workers must not touch OpenCV's thread pool: reconfiguring the pool the parent
    left behind deadlocks the worker (seen as a silent hang of ``distill`` after any cv2 call)."""
    frame = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)
    for _ in range(3):
        cv2.GaussianBlur(frame, (9, 9), 0)
    dataset = small_labeled_set()
    loader = make_loader(dataset, 2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert [len(b.paths) for b in batches] == [2, 2]
    assert batches[0].paths == [dataset[0].path, dataset[1].path]


@pytest.mark.parametrize("freeze_bn", [False, True])
def test_freeze_bn_keeps_the_running_statistics_and_trains_the_rest(freeze_bn):
    model = _student()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, make_loader(small_labeled_set(), 2), epochs=1, freeze_bn=freeze_bn, progress=False)
    after = model.state_dict()
    stats = [k for k in after if k.endswith(("running_mean", "running_var"))]
    assert stats
    assert all(torch.equal(before[k], after[k]) for k in stats) == freeze_bn
    weights = [k for k in after if k.endswith("weight") and after[k].is_floating_point()]
    assert any(not torch.equal(before[k], after[k]) for k in weights)


def test_freeze_body_fixes_the_backbone_trains_the_rest_and_hands_gradients_back():
    model = _student()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, make_loader(small_labeled_set(), 2), epochs=1, freeze_body=True, progress=False)
    after = model.state_dict()
    body = [k for k in after if k.startswith("body.")]
    rest = [k for k in after if not k.startswith("body.") and after[k].is_floating_point()]
    assert any(k.endswith("running_var") for k in body)
    assert all(torch.equal(before[k], after[k]) for k in body)
    assert any(not torch.equal(before[k], after[k]) for k in rest)
    assert all(param.requires_grad for param in model.parameters())


def test_freeze_body_names_the_missing_backbone():
    with pytest.raises(ValueError, match=r"freeze_body needs a model with a \.body backbone"):
        train(nn.Conv2d(3, 16, 1), make_loader(small_labeled_set(), 2), epochs=1, freeze_body=True)


def test_ema_follows_its_decay_formula_and_copies_integer_buffers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = ModelEma(model, decay=0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    expected = {k: v.clone() for k, v in start.items() if v.is_floating_point()}
    for update in range(1, 4):
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param))
        model[1].num_batches_tracked += 5
        ema.update(model)
        decay = min(0.9, (1 + update) / (10 + update))
        for name in expected:
            expected[name] = decay * expected[name] + (1 - decay) * model.state_dict()[name]
    for name, value in ema.module.state_dict().items():
        if name in expected:
            torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-6)
        else:
            assert value.item() == 15
    assert not torch.equal(ema.module[0].weight, model[0].weight)
    assert not torch.equal(ema.module[0].weight, start["0.weight"])

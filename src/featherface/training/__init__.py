"""Training and knowledge distillation: data, augmentation, losses and the training loop."""

from featherface.training.api import distill, train
from featherface.training.augment import PadResize, TrainAugment
from featherface.training.data import (
    Batch,
    FaceDataset,
    ImageFolderDataset,
    LabeledFaceDataset,
    RetinaFaceDataset,
    Sample,
    Target,
    WiderFaceDataset,
    collate,
    make_loader,
)
from featherface.training.labels import LabelFormatError
from featherface.training.loop import TrainConfig, Trainer
from featherface.training.losses import DEFAULT_LOSS_WEIGHTS, LOSS_TERMS, DetectionObjective
from featherface.training.mix import BatchMix
from featherface.training.student import load_body

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "LOSS_TERMS",
    "Batch",
    "BatchMix",
    "DetectionObjective",
    "FaceDataset",
    "ImageFolderDataset",
    "LabelFormatError",
    "LabeledFaceDataset",
    "PadResize",
    "RetinaFaceDataset",
    "Sample",
    "Target",
    "TrainAugment",
    "TrainConfig",
    "Trainer",
    "WiderFaceDataset",
    "collate",
    "distill",
    "load_body",
    "make_loader",
    "train",
]

"""Training data: samples, datasets (labelled and unlabelled), collate and the data loader."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from featherface.training.distributed import world_from_env
from featherface.training.labels import ImageLabels, read_labels, read_retinaface_labels, read_wider_gt

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    """One training image and its faces, all in the pixels of ``image``.

    ``image (H, W, 3)`` uint8 BGR; ``boxes (N, 4)`` float32 ``x1 y1 x2 y2``; ``landmarks (N, 5, 2)``;
    ``has_landmarks (N,)`` bool. ``labeled`` is False for images without annotations (a teacher
    labels them during distillation).
    """

    image: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    has_landmarks: np.ndarray
    labeled: bool
    path: str

    def with_faces(self, keep: np.ndarray) -> Sample:
        """The same image with only the faces selected by ``keep`` (bool mask or indices)."""
        return replace(
            self,
            boxes=self.boxes[keep],
            landmarks=self.landmarks[keep],
            has_landmarks=self.has_landmarks[keep],
        )


#: A per-sample transform: ``(sample, rng) -> sample``.
Transform = Callable[[Sample, np.random.Generator], Sample]


@dataclass
class Target:
    """Faces of one batch image as tensors, in the pixels of the batch: ``boxes (N, 4)`` ``x1 y1 x2 y2``,
    ``landmarks (N, 5, 2)``, ``has_landmarks (N,)``; ``labeled`` False asks for teacher pseudo-labels."""

    boxes: torch.Tensor
    landmarks: torch.Tensor
    has_landmarks: torch.Tensor
    labeled: bool = True


@dataclass
class Batch:
    """A collated batch: ``images (B, 3, H, W)`` uint8 BGR, one :class:`Target` and path per image.

    The training loop subtracts the model's mean from uint8 images; float images are taken as
    already normalised model input.
    """

    images: torch.Tensor
    targets: list[Target]
    paths: list[str]


def read_image(path: str | os.PathLike) -> np.ndarray:
    """``(H, W, 3)`` uint8 BGR; grayscale and alpha images are converted. Raises on unreadable files."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        reason = "does not exist" if not Path(path).exists() else "is not an image OpenCV can read"
        raise FileNotFoundError(f"training image {path} {reason}; fix or remove it from the labels")
    return image


class FaceDataset(Dataset):
    """Base class: loads :class:`Sample` objects and applies a seeded transform.

    The transform of item ``i`` in epoch ``e`` draws from ``numpy.random.default_rng((seed, e, i))``,
    so augmentation is reproducible regardless of worker processes; the training loop calls
    :meth:`set_epoch` before every epoch.
    """

    def __init__(self, transform: Transform | None = None, seed: int = 0) -> None:
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``."""
        self.epoch = epoch

    def load(self, index: int) -> Sample:
        """The untransformed sample ``index``."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        sample = self.load(index)
        if self.transform is None:
            return sample
        return self.transform(sample, np.random.default_rng((self.seed, self.epoch, index)))


class LabeledFaceDataset(FaceDataset):
    """Images with face annotations (see :mod:`featherface.training.labels`)."""

    def __init__(
        self, labels: Sequence[ImageLabels], transform: Transform | None = None, seed: int = 0
    ) -> None:
        super().__init__(transform, seed)
        if not labels:
            raise ValueError("a labelled dataset needs at least one image")
        self.labels = list(labels)

    @classmethod
    def from_file(
        cls,
        label_file: str | os.PathLike,
        image_root: str | os.PathLike | None = None,
        transform: Transform | None = None,
        seed: int = 0,
    ) -> LabeledFaceDataset:
        """Read a RetinaFace ``label.txt`` or a WIDER ``*_bbx_gt.txt`` (told apart by content)."""
        return cls(read_labels(label_file, image_root), transform, seed)

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Sample:
        entry = self.labels[index]
        return Sample(
            read_image(entry.path),
            entry.boxes.copy(),
            entry.landmarks.copy(),
            entry.has_landmarks.copy(),
            True,
            str(entry.path),
        )


class RetinaFaceDataset(LabeledFaceDataset):
    """A RetinaFace ``label.txt`` (boxes, optional 5 landmarks); images under ``image_root``."""

    def __init__(
        self,
        label_file: str | os.PathLike,
        image_root: str | os.PathLike | None = None,
        transform: Transform | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(read_retinaface_labels(label_file, image_root), transform, seed)


class WiderFaceDataset(LabeledFaceDataset):
    """The official ``wider_face_{train,val}_bbx_gt.txt`` (boxes only); images under ``image_root``."""

    def __init__(
        self,
        gt_file: str | os.PathLike,
        image_root: str | os.PathLike,
        transform: Transform | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(read_wider_gt(gt_file, image_root), transform, seed)


class ImageFolderDataset(FaceDataset):
    """Every image under ``root`` (recursively, sorted), without labels: a teacher labels them."""

    def __init__(self, root: str | os.PathLike, transform: Transform | None = None, seed: int = 0) -> None:
        super().__init__(transform, seed)
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        self.paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.paths:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Sample:
        path = self.paths[index]
        return Sample(
            read_image(path),
            np.zeros((0, 4), np.float32),
            np.zeros((0, 5, 2), np.float32),
            np.zeros(0, bool),
            False,
            str(path),
        )


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack samples of equal size into a :class:`Batch`; face counts may differ per image."""
    shapes = {s.image.shape for s in samples}
    if len(shapes) != 1:
        raise ValueError(
            f"images in a batch must share one size, got {sorted(shapes)}; give the dataset a transform "
            "that resizes, e.g. TrainAugment(image_size=640)"
        )
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).contiguous()
    targets = [
        Target(
            torch.from_numpy(np.ascontiguousarray(s.boxes, np.float32)).reshape(-1, 4),
            torch.from_numpy(np.ascontiguousarray(s.landmarks, np.float32)).reshape(-1, 5, 2),
            torch.from_numpy(np.ascontiguousarray(s.has_landmarks, bool)).reshape(-1),
            s.labeled,
        )
        for s in samples
    ]
    return Batch(images, targets, [s.path for s in samples])


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A :class:`DataLoader` with :func:`collate` and a seeded :class:`DistributedSampler`.

    The sampler shards the data over the processes of a ``torchrun`` launch (one shard otherwise)
    and shuffles with ``seed + epoch``, so the order of every epoch is reproducible.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rank, world_size, _ = world_from_env()
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
    )

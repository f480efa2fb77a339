"""Per-image augmentation that moves boxes and landmarks with the pixels.

Coordinates are continuous pixels: pixel ``i`` covers ``[i, i + 1)``, so a horizontal flip maps
``x → W − x`` and a resize by ``s`` maps ``x → s·x``. Every random choice comes from the ``rng``
argument, so a transform is reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np

from featherface.training.data import Sample

#: Side of the square crop as a fraction of the image's short side (RetinaFace).
CROP_SCALES = (0.3, 0.45, 0.6, 0.8, 1.0)
#: Largest crop scale :class:`TrainAugment` accepts: a zoom-out crop of 4 short sides already shrinks
#: a 1024 × 683 photo's faces to a quarter at 640 pixels; larger ones only cost memory.
MAX_CROP_SCALE = 4.0
#: Landmark order after a horizontal flip: the eyes and the mouth corners swap sides.
FLIP_LANDMARK_ORDER = (1, 0, 2, 4, 3)
INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)
MEAN_BGR = (104, 117, 123)


def crop(
    sample: Sample,
    x0: int,
    y0: int,
    side: int,
    fill: tuple[int, int, int] = MEAN_BGR,
    max_side: int | None = None,
) -> Sample:
    """Cut the square ``[x0, x0 + side) × [y0, y0 + side)``; where it reaches past the image (a
    zoom-out crop, larger than the image or at a negative offset) it is filled with ``fill``.

    Faces whose box centre falls outside are dropped; the others are clipped to the square and
    shifted with their landmarks. A zoom-out square larger than ``max_side`` is built at
    ``max_side`` pixels directly (the image shrunk by area averaging, then placed), as cropping
    and resizing would give it, without the full-size canvas.
    """
    boxes = sample.boxes
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = (
        (centres[:, 0] >= x0)
        & (centres[:, 0] < x0 + side)
        & (centres[:, 1] >= y0)
        & (centres[:, 1] < y0 + side)
    )
    kept = sample.with_faces(inside)
    height, width = sample.image.shape[:2]
    if x0 >= 0 and y0 >= 0 and x0 + side <= width and y0 + side <= height:
        image = np.ascontiguousarray(sample.image[y0 : y0 + side, x0 : x0 + side])
        out_side, scale, shift = side, np.ones(2, np.float32), np.array([x0, y0], np.float32)
    else:
        out_side = side if max_side is None else min(side, max_side)
        image, scale, shift = _zoomed_window(sample.image, x0, y0, side, out_side, fill)
    new_boxes = np.clip((kept.boxes - np.tile(shift, 2)) * np.tile(scale, 2), 0, out_side).astype(np.float32)
    landmarks = ((kept.landmarks - shift) * scale).astype(np.float32)
    return replace(kept, image=image, boxes=new_boxes, landmarks=landmarks)


def _zoomed_window(
    image: np.ndarray, x0: int, y0: int, side: int, out_side: int, fill: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The square ``[x0, x0 + side) × [y0, y0 + side)`` of ``image``, filled with ``fill`` beyond
    it, built at ``out_side`` pixels. Returns it with the per-axis ``scale`` and ``shift`` that map
    an image coordinate ``p`` to ``(p − shift) · scale`` in it."""
    height, width = image.shape[:2]
    window = np.empty((out_side, out_side, 3), np.uint8)
    window[...] = np.asarray(fill, np.uint8)
    left, top = max(x0, 0), max(y0, 0)
    right, bottom = min(x0 + side, width), min(y0 + side, height)
    factor = out_side / side
    # the image's part lands on whole pixels: [left, right) → [place_x, place_x + size_x)
    place = np.rint(np.array([left - x0, top - y0]) * factor).astype(int)
    size = np.maximum(np.rint(np.array([right - left, bottom - top]) * factor).astype(int), 0)
    size = np.minimum(size, out_side - place)
    scale = np.ones(2, np.float32)
    if (size > 0).all():
        part = image[top:bottom, left:right]
        if out_side != side:
            part = cv2.resize(part, (int(size[0]), int(size[1])), interpolation=cv2.INTER_AREA)
            scale = (size / np.array([right - left, bottom - top])).astype(np.float32)
        window[place[1] : place[1] + size[1], place[0] : place[0] + size[0]] = part
    return window, scale, np.array([left, top], np.float32) - place / scale


def _offset(extent: int, side: int, rng: np.random.Generator) -> int:
    """Start of a window of ``side`` pixels along an axis of ``extent``: inside it when it fits,
    otherwise anywhere that keeps the whole axis inside the window."""
    low, high = min(0, extent - side), max(0, extent - side)
    return int(rng.integers(low, high + 1))


def random_square_crop(
    sample: Sample,
    rng: np.random.Generator,
    scales: tuple[float, ...] = CROP_SCALES,
    max_tries: int = 250,
    max_side: int | None = None,
) -> Sample:
    """RetinaFace's random square crop: side = scale · short side, for a scale drawn from ``scales``.

    A scale above 1 zooms out (SCRFD): the square is larger than the short side, covers the image
    along every axis it exceeds, and is filled with the mean colour beyond the image, so its faces
    shrink when it is resized to the training size. A crop is accepted when at least one face lies
    entirely inside it (any crop for an image without faces); faces whose centre leaves the crop
    are dropped. After ``max_tries`` failures the sample is returned uncropped. A zoom-out crop
    larger than ``max_side`` comes out at ``max_side`` pixels (see :func:`crop`).
    """
    height, width = sample.image.shape[:2]
    short = min(height, width)
    boxes = sample.boxes
    for _ in range(max_tries):
        side = max(1, int(float(rng.choice(scales)) * short))
        x0 = _offset(width, side, rng)
        y0 = _offset(height, side, rng)
        if len(boxes):
            whole = (
                (boxes[:, 0] >= x0)
                & (boxes[:, 1] >= y0)
                & (boxes[:, 2] <= x0 + side)
                & (boxes[:, 3] <= y0 + side)
            )
            if not whole.any():
                continue
        return crop(sample, x0, y0, side, max_side=max_side)
    return sample


def check_crop_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """``scales`` as a tuple of floats; a :class:`ValueError` unless there is at least one and each
    lies in ``(0, MAX_CROP_SCALE]``."""
    scales = tuple(float(scale) for scale in scales)
    if not scales or not all(0.0 < scale <= MAX_CROP_SCALE for scale in scales):
        raise ValueError(
            f"crop_scales are fractions of the short side in (0, {MAX_CROP_SCALE:g}] (above 1 zooms "
            f"out), at least one; got {scales}"
        )
    return scales


def pad_to_square(sample: Sample, fill: tuple[int, int, int] = MEAN_BGR) -> Sample:
    """Pad right and bottom with ``fill`` to a square; coordinates do not move."""
    height, width = sample.image.shape[:2]
    side = max(height, width)
    if height == width:
        return sample
    image = np.empty((side, side, 3), np.uint8)
    image[...] = np.asarray(fill, np.uint8)
    image[:height, :width] = sample.image
    return replace(sample, image=image)


def photometric_distort(sample: Sample, rng: np.random.Generator) -> Sample:
    """Random brightness (±32), contrast (×0.5–1.5), saturation (×0.5–1.5) and hue (±18°·2), each with
    probability ½, contrast either first or last (RetinaFace). Geometry is unchanged."""
    image = sample.image.astype(np.float32)
    if rng.random() < 0.5:
        image += rng.uniform(-32, 32)
    contrast_first = rng.random() < 0.5
    if contrast_first and rng.random() < 0.5:
        image *= rng.uniform(0.5, 1.5)
    hsv = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_BGR2HSV).astype(np.float32)
    if rng.random() < 0.5:
        hsv[..., 1] *= rng.uniform(0.5, 1.5)
    if rng.random() < 0.5:
        hsv[..., 0] = (hsv[..., 0] + rng.integers(-18, 19)) % 180
    image = cv2.cvtColor(np.clip(hsv, 0, [179, 255, 255]).astype(np.uint8), cv2.COLOR_HSV2BGR).astype(
        np.float32
    )
    if not contrast_first and rng.random() < 0.5:
        image *= rng.uniform(0.5, 1.5)
    return replace(sample, image=np.clip(image, 0, 255).astype(np.uint8))


def horizontal_flip(sample: Sample) -> Sample:
    """Mirror left–right: ``x → W − x`` for boxes and landmarks, and swap left/right landmarks."""
    width = sample.image.shape[1]
    boxes = sample.boxes.copy()
    boxes[:, [0, 2]] = width - sample.boxes[:, [2, 0]]
    landmarks = sample.landmarks[:, FLIP_LANDMARK_ORDER].copy()
    landmarks[..., 0] = width - landmarks[..., 0]
    image = np.ascontiguousarray(sample.image[:, ::-1])
    return replace(sample, image=image, boxes=boxes, landmarks=landmarks)


def resize(sample: Sample, size: int, interpolation: int = cv2.INTER_LINEAR) -> Sample:
    """Resize to ``size × size`` (the sample should be square); coordinates scale with the pixels."""
    height, width = sample.image.shape[:2]
    scale = np.array([size / width, size / height], np.float32)
    image = cv2.resize(sample.image, (size, size), interpolation=interpolation)
    return replace(
        sample, image=image, boxes=sample.boxes * np.tile(scale, 2), landmarks=sample.landmarks * scale
    )


def degrade(sample: Sample, rng: np.random.Generator) -> Sample:
    """One image degradation that hard WIDER FACE faces show, drawn uniformly: Gaussian blur
    (σ 0.5–2 pixels), low resolution (shrunk to 25–75% by area averaging and enlarged back
    bilinearly), Gaussian sensor noise (σ 2–10 grey levels) or JPEG compression (quality 15–60).
    Geometry is unchanged, so boxes and landmarks stay."""
    image = sample.image
    kind = int(rng.integers(4))
    if kind == 0:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.5, 2.0)))
    elif kind == 1:
        height, width = image.shape[:2]
        factor = rng.uniform(0.25, 0.75)
        small = (max(1, round(width * factor)), max(1, round(height * factor)))
        image = cv2.resize(cv2.resize(image, small, interpolation=cv2.INTER_AREA), (width, height))
    elif kind == 2:
        noise = rng.normal(0.0, rng.uniform(2.0, 10.0), image.shape)
        image = np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)
    else:
        quality = int(rng.integers(15, 61))
        _, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return replace(sample, image=np.ascontiguousarray(image))


#: Brightest grey level of a :func:`blank_frame` drawn as black: dark video frames and lens-cap shots.
BLANK_DARK_MAX = 16


def blank_frame(sample: Sample, size: int, rng: np.random.Generator) -> Sample:
    """A ``size × size`` frame without faces in place of ``sample``: one uniform grey level in
    ``[0, BLANK_DARK_MAX]`` (a black or dark frame) half of the time, otherwise one uniform random
    colour, with Gaussian sensor noise (σ up to 4 grey levels) half of the time.

    Such frames never occur in face datasets, yet a detector meets them in video (fades, a covered
    lens); trained on them it learns to find no face there. The frame is labelled (it has no faces,
    known for certain), so a teacher's labels are not needed for it.
    """
    if rng.random() < 0.5:
        colour = np.full(3, rng.integers(0, BLANK_DARK_MAX + 1), np.float32)
    else:
        colour = rng.integers(0, 256, 3).astype(np.float32)
    image = np.broadcast_to(colour, (size, size, 3))
    if rng.random() < 0.5:
        image = image + rng.normal(0.0, rng.uniform(0.0, 4.0), (size, size, 3))
    return Sample(
        image=np.clip(np.rint(image), 0, 255).astype(np.uint8),
        boxes=np.zeros((0, 4), np.float32),
        landmarks=np.zeros((0, 5, 2), np.float32),
        has_landmarks=np.zeros(0, bool),
        labeled=True,
        path=sample.path,
    )


class TrainAugment:
    """The RetinaFace training pipeline: random square crop → photometric distortion → horizontal
    flip → pad to square (if not cropped) → resize to ``image_size`` with a random interpolation.

    The crop is chosen around the labelled faces (one must fit whole), so unlabelled images are
    not cropped unless ``crop_unlabeled``: a blind crop often cuts every face away, leaving the
    teacher nothing to label. With probability ``whole_image`` an image is not cropped either: the
    whole image, padded to a square, shrinks its faces by ``image_size / long side`` (0.625 for a
    1024-pixel WIDER FACE image at 640) where a crop enlarges them by up to 3×, so training sees
    faces as small as full-size photos hold. With probability ``blank`` the image is replaced by a
    faceless :func:`blank_frame` (black, dark or one colour). ``crop_scales`` are the crop sides as
    fractions of the short side (RetinaFace's :data:`CROP_SCALES` by default); scales above 1 zoom
    out (see :func:`random_square_crop`), as SCRFD's 0.3–2.0 range does. With probability
    ``degrade`` the resized image is blurred, made low-resolution, noisy or JPEG-compressed
    (:func:`degrade`). Faces smaller than ``min_face`` pixels (either side) at the training size
    are dropped.
    """

    def __init__(
        self,
        image_size: int,
        *,
        crop: bool = True,
        crop_unlabeled: bool = False,
        distort: bool = True,
        flip: float = 0.5,
        min_face: float = 1.0,
        whole_image: float = 0.0,
        blank: float = 0.0,
        crop_scales: Sequence[float] = CROP_SCALES,
        degrade: float = 0.0,
    ) -> None:
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
        crop_scales = check_crop_scales(crop_scales)
        for name, probability in (("whole_image", whole_image), ("blank", blank), ("degrade", degrade)):
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {probability}")
        self.image_size = image_size
        self.crop = crop
        self.crop_unlabeled = crop_unlabeled
        self.distort = distort
        self.flip = flip
        self.min_face = min_face
        self.whole_image = whole_image
        self.blank = blank
        self.crop_scales = crop_scales
        self.degrade = degrade

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        # no draw at probability 0: runs without blank frames, whole images or degradations keep their streams
        if self.blank > 0 and rng.random() < self.blank:
            return blank_frame(sample, self.image_size, rng)
        whole = self.whole_image > 0 and rng.random() < self.whole_image
        if self.crop and (sample.labeled or self.crop_unlabeled) and not whole:
            sample = random_square_crop(sample, rng, self.crop_scales, max_side=self.image_size)
        if self.distort:
            sample = photometric_distort(sample, rng)
        if rng.random() < self.flip:
            sample = horizontal_flip(sample)
        sample = pad_to_square(sample)
        sample = resize(sample, self.image_size, int(rng.choice(INTERPOLATIONS)))
        if self.degrade > 0 and rng.random() < self.degrade:
            sample = degrade(sample, rng)
        sizes = sample.boxes[:, 2:] - sample.boxes[:, :2]
        return sample.with_faces((sizes >= self.min_face).all(axis=1))


class PadResize:
    """No augmentation: pad to square and resize to ``image_size`` (for plain or validation runs)."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return resize(pad_to_square(sample), self.image_size)

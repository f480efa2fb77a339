"""Augmentation moves boxes and landmarks with the pixels: a box and five landmarks are painted on a
real photo, and after every transform the painted pixels are where the coordinates say."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from featherface.training.augment import (
    BLANK_DARK_MAX,
    FLIP_LANDMARK_ORDER,
    INTERPOLATIONS,
    MEAN_BGR,
    PadResize,
    TrainAugment,
    crop,
    degrade,
    horizontal_flip,
    pad_to_square,
    photometric_distort,
    random_square_crop,
    resize,
)
from featherface.training.data import Sample, Target, collate
from featherface.training.mix import BatchMix, cutmix_pair, mixup_pair, mosaic_tiles

from .conftest import shared_path

GREEN, FRAME = (0, 255, 0), (255, 0, 255)
#: One colour per landmark (BGR): red, blue, yellow, cyan, white.
POINT_COLOURS = np.array([(0, 0, 255), (255, 0, 0), (0, 255, 255), (255, 255, 0), (255, 255, 255)])
BOX = (150, 100, 250, 200)
POINTS = ((175, 130), (225, 130), (190, 155), (180, 180), (220, 180))  # nose left of centre


def painted_sample(shift: int = 0) -> Sample:
    """A real photo with a green face box in a magenta frame and five coloured 11×11 landmark dots."""
    image = cv2.imread(str(shared_path("data", "dlib_faces", "2008_002470.jpg")))
    x1, y1, x2, y2 = (v + shift for v in BOX)
    cv2.rectangle(image, (x1 - 16, y1 - 16), (x2 + 15, y2 + 15), FRAME, thickness=-1)
    image[y1:y2, x1:x2] = GREEN
    for (px, py), colour in zip(POINTS, POINT_COLOURS):
        image[py + shift - 5 : py + shift + 6, px + shift - 5 : px + shift + 6] = colour
    points = np.array(POINTS, np.float32)[None] + shift + 0.5  # centres of the dots' middle pixels
    return Sample(
        image,
        np.array([[x1, y1, x2, y2]], np.float32),
        points,
        np.array([True]),
        True,
        "painted",
    )


def close(pixel: np.ndarray, colour, tolerance: int = 40) -> bool:
    return bool(np.abs(pixel.astype(int) - np.asarray(colour)).max() <= tolerance)


def assert_faces_on_pixels(sample: Sample, point_order=tuple(range(5)), index: int = 0) -> None:
    """The box of face ``index`` covers green and is framed by magenta; landmark k shows colour order[k]."""
    x1, y1, x2, y2 = sample.boxes[index]
    image = sample.image
    height, width = image.shape[:2]
    for x, y in ((x1 + 3, y1 + 3), (x2 - 3, y1 + 3), (x1 + 3, y2 - 3), (x2 - 3, y2 - 3)):
        assert close(image[int(y), int(x)], GREEN), f"({x:.1f}, {y:.1f}) should be inside the green box"
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    for x, y in ((x1 - 3, cy), (x2 + 2.5, cy), (cx, y1 - 3), (cx, y2 + 2.5)):
        if 0 <= x < width and 0 <= y < height:  # a crop may cut the frame away
            assert close(image[int(y), int(x)], FRAME), f"({x:.1f}, {y:.1f}) should be on the box's frame"
    for k, (x, y) in enumerate(sample.landmarks[index]):
        expected = POINT_COLOURS[point_order[k]]
        assert close(image[int(y), int(x)], expected), f"landmark {k} at ({x:.1f}, {y:.1f}) is off its dot"


def test_the_painting_itself_is_consistent():
    assert_faces_on_pixels(painted_sample())


def test_crop_moves_faces_and_drops_those_whose_centre_leaves():
    sample = painted_sample()
    cropped = crop(sample, 120, 60, 200)
    assert cropped.image.shape == (200, 200, 3)
    np.testing.assert_array_equal(cropped.boxes, [[30, 40, 130, 140]])
    assert_faces_on_pixels(cropped)
    # the box centre (200, 150) is outside this crop: the face is dropped
    assert len(crop(sample, 210, 0, 150).boxes) == 0
    # partly outside but centre inside: the box is clipped to the crop
    clipped = crop(sample, 180, 100, 150)
    np.testing.assert_array_equal(clipped.boxes, [[0, 0, 70, 100]])


def test_random_square_crop_keeps_the_face_whole_and_on_its_pixels():
    sample = painted_sample()
    sides = set()
    for seed in range(20):
        out = random_square_crop(sample, np.random.default_rng(seed))
        height, width = out.image.shape[:2]
        assert height == width and height in {int(s * 332) for s in (0.3, 0.45, 0.6, 0.8, 1.0)}
        sides.add(height)
        assert_faces_on_pixels(out)
    assert len(sides) >= 3


def test_zoom_out_crop_pads_with_the_mean_colour_and_keeps_faces_on_their_pixels():
    sample = painted_sample()  # 500 × 332
    zoomed = crop(sample, -40, -100, 600)
    assert zoomed.image.shape == (600, 600, 3)
    np.testing.assert_array_equal(zoomed.boxes, [[190, 200, 290, 300]])
    assert_faces_on_pixels(zoomed)
    np.testing.assert_array_equal(zoomed.image[:100, :], np.broadcast_to(MEAN_BGR, (100, 600, 3)))
    np.testing.assert_array_equal(zoomed.image[:, :40], np.broadcast_to(MEAN_BGR, (600, 40, 3)))
    np.testing.assert_array_equal(zoomed.image[432:, :], np.broadcast_to(MEAN_BGR, (168, 600, 3)))
    np.testing.assert_array_equal(zoomed.image[100:432, 40:540], sample.image)
    # built at 300 pixels directly: the crop resized by ½, without the 600-pixel canvas
    small = crop(sample, -40, -100, 600, max_side=300)
    assert small.image.shape == (300, 300, 3)
    np.testing.assert_allclose(small.boxes, zoomed.boxes / 2, atol=0.01)
    np.testing.assert_allclose(small.landmarks, zoomed.landmarks / 2, atol=0.01)
    assert_faces_on_pixels(small)
    resized = resize(zoomed, 300, cv2.INTER_AREA)
    assert np.abs(small.image.astype(int) - resized.image.astype(int)).mean() < 2
    # an odd factor: the image's part lands on whole pixels and coordinates follow it exactly
    odd = crop(sample, -77, -211, 700, max_side=333)
    assert odd.image.shape == (333, 333, 3)
    assert_faces_on_pixels(odd)
    # a square that fits inside the image is cut at full size whatever max_side says
    np.testing.assert_array_equal(
        crop(sample, 120, 60, 200, max_side=50).image, crop(sample, 120, 60, 200).image
    )


def test_random_square_crop_zooms_out_with_scales_above_one():
    sample = painted_sample()
    sides = set()
    for seed in range(20):
        out = random_square_crop(sample, np.random.default_rng(seed), scales=(1.5, 2.0))
        side = out.image.shape[0]
        assert out.image.shape == (side, side, 3) and side in {int(1.5 * 332), int(2.0 * 332)}
        sides.add(side)
        assert_faces_on_pixels(out)
        # the whole image is inside: every row and column of the 500 × 332 photo, padded around
        assert (out.image == MEAN_BGR).all(axis=2).sum() == side * side - 500 * 332 or side < 500
    assert len(sides) == 2
    # scales of 1 or less draw the same offsets as before zoom-out crops existed
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(
        random_square_crop(sample, rng_a).image, random_square_crop(sample, rng_b, max_side=64).image
    )


def test_training_pipeline_with_zoom_out_scales_shrinks_faces_and_validates_scales():
    sample = painted_sample()
    augment = TrainAugment(320, distort=False, flip=0.0, crop_scales=(2.0,))
    for seed in range(6):
        out = augment(sample, np.random.default_rng(seed))
        assert out.image.shape == (320, 320, 3)
        # a 664-pixel square at 320: the 100-pixel face shrinks to 48
        np.testing.assert_allclose(out.boxes[0, 2:] - out.boxes[0, :2], [100 * 320 / 664] * 2, atol=0.5)
        assert_faces_on_pixels(out)
    for bad in ((), (0.0, 1.0), (1.0, 4.5)):
        with pytest.raises(ValueError, match=r"crop_scales are fractions of the short side in \(0, 4\]"):
            TrainAugment(320, crop_scales=bad)


def test_flip_mirrors_and_swaps_left_and_right_landmarks():
    flipped = horizontal_flip(painted_sample())
    width = flipped.image.shape[1]
    np.testing.assert_array_equal(flipped.boxes, [[width - 250, 100, width - 150, 200]])
    assert FLIP_LANDMARK_ORDER == (1, 0, 2, 4, 3)
    # landmark 0 (left eye) is now the mirrored right eye, which was painted blue
    assert_faces_on_pixels(flipped, point_order=FLIP_LANDMARK_ORDER)
    twice = horizontal_flip(flipped)
    np.testing.assert_array_equal(twice.image, painted_sample().image)
    np.testing.assert_allclose(twice.landmarks, painted_sample().landmarks)


@pytest.mark.parametrize("size", [160, 320, 640])
def test_pad_and_resize_scale_coordinates_with_the_pixels(size):
    padded = pad_to_square(painted_sample())
    assert padded.image.shape == (500, 500, 3)
    assert_faces_on_pixels(padded)
    resized = resize(padded, size)
    np.testing.assert_allclose(resized.boxes, np.array([BOX], np.float32) * size / 500, rtol=1e-6)
    assert_faces_on_pixels(resized)


def test_photometric_distortion_changes_colours_not_geometry():
    sample = painted_sample()
    changed = 0
    for seed in range(6):
        out = photometric_distort(sample, np.random.default_rng(seed))
        assert out.image.shape == sample.image.shape and out.image.dtype == np.uint8
        np.testing.assert_array_equal(out.boxes, sample.boxes)
        np.testing.assert_array_equal(out.landmarks, sample.landmarks)
        changed += not np.array_equal(out.image, sample.image)
    assert changed >= 4


def test_training_pipeline_keeps_faces_on_their_pixels_for_many_seeds():
    augment = TrainAugment(320, distort=False)
    flips = 0
    for seed in range(16):
        out = augment(painted_sample(), np.random.default_rng(seed))
        assert out.image.shape == (320, 320, 3) and len(out.boxes) == 1
        box = out.boxes[0]
        flipped = out.landmarks[0, 2, 0] > (box[0] + box[2]) / 2  # the painted nose is left of centre
        flips += flipped
        assert_faces_on_pixels(out, point_order=FLIP_LANDMARK_ORDER if flipped else tuple(range(5)))
    assert 0 < flips < 16
    again = augment(painted_sample(), np.random.default_rng(7))
    np.testing.assert_array_equal(again.image, augment(painted_sample(), np.random.default_rng(7)).image)


def assert_same_stream_as_crop_flip_resize(augment: TrainAugment, sample: Sample) -> None:
    """``augment`` (no distortion, no flip) draws exactly what crop, flip and resize draw: an option
    at probability 0 takes no random number, so runs without it keep their random streams."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        cropped = random_square_crop(sample, rng)
        rng.random()
        expected = resize(pad_to_square(cropped), augment.image_size, int(rng.choice(INTERPOLATIONS)))
        np.testing.assert_array_equal(augment(sample, np.random.default_rng(seed)).image, expected.image)


def test_whole_image_shrinks_faces_to_the_long_side_and_keeps_them_on_their_pixels():
    # the painted photo is 500×332: a whole image at 320 scales every coordinate by 320 / 500
    sample = painted_sample()
    whole = TrainAugment(320, distort=False, flip=0.0, whole_image=1.0)
    for seed in range(4):
        out = whole(sample, np.random.default_rng(seed))
        np.testing.assert_allclose(out.boxes, np.array([BOX], np.float32) * 320 / 500, rtol=1e-6)
        assert_faces_on_pixels(out)
    # with probability p about a p share of images are whole, the others cropped (faces enlarged)
    some = TrainAugment(320, distort=False, flip=0.0, whole_image=0.3)
    widths = [some(sample, np.random.default_rng(seed)).boxes[0, 2:].tolist() for seed in range(200)]
    shrunk = sum(np.allclose(w, np.array(BOX[2:]) * 320 / 500) for w in widths)
    assert 40 <= shrunk <= 80
    # at 0 no extra random number is drawn: crop, flip draw, interpolation as before the option existed
    assert_same_stream_as_crop_flip_resize(
        TrainAugment(320, distort=False, flip=0.0, whole_image=0.0), sample
    )
    with pytest.raises(ValueError, match=r"whole_image is a probability in \[0, 1\], got 1.5"):
        TrainAugment(320, whole_image=1.5)


def test_blank_frames_replace_images_by_faceless_uniform_frames():
    sample = painted_sample()
    blank = TrainAugment(320, blank=1.0)
    dark = colour = 0
    for seed in range(40):
        out = blank(sample, np.random.default_rng(seed))
        assert out.image.shape == (320, 320, 3) and out.image.dtype == np.uint8
        assert len(out.boxes) == len(out.landmarks) == len(out.has_landmarks) == 0 and out.labeled
        level = np.median(out.image.reshape(-1, 3), axis=0)
        # one colour plus sensor noise of σ ≤ 4: 99.9% of the pixels lie within 4σ of it
        assert np.quantile(np.abs(out.image - level).max(axis=2), 0.999) <= 16
        gray = level[0] == level[1] == level[2]
        dark += gray and level[0] <= BLANK_DARK_MAX
        colour += not (gray and level[0] <= BLANK_DARK_MAX)
    assert 10 <= dark <= 30 and dark + colour == 40
    # with probability p about a p share of the images is blank, the others augmented as before
    some = TrainAugment(320, blank=0.25)
    faceless = sum(len(some(sample, np.random.default_rng(seed)).boxes) == 0 for seed in range(200))
    assert 30 <= faceless <= 70
    # at 0 no extra random number is drawn: the stream of runs without blank frames is unchanged
    assert_same_stream_as_crop_flip_resize(TrainAugment(320, distort=False, flip=0.0, blank=0.0), sample)
    with pytest.raises(ValueError, match=r"blank is a probability in \[0, 1\], got -0.1"):
        TrainAugment(320, blank=-0.1)


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: high for fine detail and noise."""
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_degradations_blur_shrink_noise_or_compress_and_keep_the_geometry():
    sample = painted_sample()
    before = sharpness(sample.image)
    seen = {"softer": 0, "noisier": 0}
    for seed in range(16):
        out = degrade(sample, np.random.default_rng(seed))
        assert out.image.shape == sample.image.shape and out.image.dtype == np.uint8
        np.testing.assert_array_equal(out.boxes, sample.boxes)
        np.testing.assert_array_equal(out.landmarks, sample.landmarks)
        difference = np.abs(out.image.astype(int) - sample.image).mean()
        assert 0.5 < difference < 25  # visibly changed, still the same picture
        x1, y1, x2, y2 = (int(v) for v in sample.boxes[0])
        assert close(out.image[y1 + 12 : y2 - 12, x1 + 12 : x2 - 12].mean(axis=(0, 1)), GREEN)
        seen["softer" if sharpness(out.image) < before else "noisier"] += 1
    assert seen["softer"] >= 4 and seen["noisier"] >= 2  # blur / low resolution and noise all occur
    # in the pipeline: same crop, flip and resize draws as without (one draw after the resize)
    plain, degraded = TrainAugment(320), TrainAugment(320, degrade=1.0)
    for seed in range(4):
        a, b = plain(sample, np.random.default_rng(seed)), degraded(sample, np.random.default_rng(seed))
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert not np.array_equal(a.image, b.image)
    assert_same_stream_as_crop_flip_resize(TrainAugment(320, distort=False, flip=0.0, degrade=0.0), sample)
    with pytest.raises(ValueError, match=r"degrade is a probability in \[0, 1\], got 1.5"):
        TrainAugment(320, degrade=1.5)


def _batch_of_two() -> tuple[torch.Tensor, list[Target], list[Sample]]:
    samples = [PadResize(320)(painted_sample(shift), np.random.default_rng(0)) for shift in (0, 120)]
    batch = collate(samples)
    return batch.images.float(), batch.targets, samples


def test_cutmix_pastes_the_partner_face_with_its_coordinates():
    images, targets, _ = _batch_of_two()
    # paste a region around the second image's face (its box is (270, 220, 370, 320) · 320/500)
    region = (165, 130, 260, 230)
    image, target = cutmix_pair(images[0], targets[0], images[1], targets[1], region)
    torch.testing.assert_close(image[:, 130:230, 165:260], images[1][:, 130:230, 165:260])
    torch.testing.assert_close(image[:, :, :165], images[0][:, :, :165])
    # the first face (centre 128, 96) is outside the region and kept; the second one is pasted in
    assert len(target.boxes) == 2
    torch.testing.assert_close(target.boxes[1], targets[1].boxes[0])
    mixed = Sample(
        image.permute(1, 2, 0).numpy().astype(np.uint8),
        target.boxes.numpy(),
        target.landmarks.numpy(),
        target.has_landmarks.numpy(),
        True,
        "",
    )
    assert_faces_on_pixels(mixed, index=0)
    assert_faces_on_pixels(mixed, index=1)
    # a region over the first face drops it (its centre is covered by the partner's pixels)
    _, covered = cutmix_pair(images[0], targets[0], images[1], targets[1], (60, 40, 200, 160))
    assert len(covered.boxes) == 0


def test_mixup_blends_pixels_and_keeps_both_faces():
    images, targets, _ = _batch_of_two()
    image, target = mixup_pair(images[0], targets[0], images[1], targets[1], 0.3)
    torch.testing.assert_close(image, 0.3 * images[0] + 0.7 * images[1])
    torch.testing.assert_close(target.boxes, torch.cat((targets[0].boxes, targets[1].boxes)))
    torch.testing.assert_close(target.landmarks, torch.cat((targets[0].landmarks, targets[1].landmarks)))


def as_sample(image: torch.Tensor, target: Target) -> Sample:
    pixels = image.permute(1, 2, 0).clamp(0, 255).round().numpy().astype(np.uint8)
    return Sample(
        pixels, target.boxes.numpy(), target.landmarks.numpy(), target.has_landmarks.numpy(), True, ""
    )


def test_mosaic_tiles_four_half_size_images_with_their_faces():
    samples = [PadResize(640)(painted_sample(shift), np.random.default_rng(0)) for shift in (0, 40, 80, 120)]
    batch = collate(samples)
    images = batch.images.float()
    image, target = mosaic_tiles(images, batch.targets)
    assert image.shape == images.shape[1:] and len(target.boxes) == 4
    # each quadrant is its image at half size; each face is halved and moved with it
    for index, (top, left) in enumerate(((0, 0), (0, 320), (320, 0), (320, 320))):
        expected = torch.nn.functional.avg_pool2d(images[index], 2)
        torch.testing.assert_close(image[:, top : top + 320, left : left + 320], expected)
        offset = torch.tensor([left, top], dtype=torch.float32)
        torch.testing.assert_close(target.boxes[index], batch.targets[index].boxes[0] / 2 + offset.repeat(2))
        assert_faces_on_pixels(as_sample(image, target), index=index)
    assert bool(target.has_landmarks.all())
    with pytest.raises(ValueError, match="takes 4 images"):
        mosaic_tiles(images[:3], batch.targets[:3])


def test_batch_mix_mosaic_replaces_images_and_keeps_their_faces():
    images, targets, _ = _batch_of_two()
    mixed, mixed_targets = BatchMix(mosaic=1.0)(images, targets, np.random.default_rng(0))
    # two images: each mosaic holds itself and its partner twice, so four faces per image
    assert [len(t.boxes) for t in mixed_targets] == [4, 4]
    for image, target in zip(mixed, mixed_targets):
        for index in range(4):
            assert_faces_on_pixels(as_sample(image, target), index=index)
    with pytest.raises(ValueError, match="mosaic"):
        BatchMix(cutmix=0.5, mosaic=0.6)


def test_batch_mix_is_seeded_and_validates_probabilities():
    images, targets, _ = _batch_of_two()
    mix = BatchMix(mixup=0.5, cutmix=0.5)
    first = mix(images, targets, np.random.default_rng(1))
    second = mix(images, targets, np.random.default_rng(1))
    torch.testing.assert_close(first[0], second[0])
    assert not torch.equal(first[0], images)
    with pytest.raises(ValueError, match="at most 1"):
        BatchMix(mixup=0.7, cutmix=0.5)

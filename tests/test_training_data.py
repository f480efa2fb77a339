"""Training data: label parsing (both formats), datasets, reproducible transforms, collate."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from featherface.training import ImageFolderDataset, LabeledFaceDataset, RetinaFaceDataset, WiderFaceDataset
from featherface.training.augment import TrainAugment
from featherface.training.data import collate
from featherface.training.labels import LabelFormatError, read_labels, read_retinaface_labels

from .conftest import shared_path


def _face_rows(label_file) -> tuple[int, int]:
    """Face rows in a label.txt and how many have zero width or height, by plain token counting."""
    rows = [line.split() for line in label_file.read_text().splitlines() if line and not line.startswith("#")]
    return len(rows), sum(float(r[2]) <= 0 or float(r[3]) <= 0 for r in rows)


def test_retinaface_labels_of_widerface_train1000():
    label_file = shared_path("data", "widerface_train1000", "label.txt")
    dataset = RetinaFaceDataset(label_file)
    assert len(dataset) == 999
    first = dataset.labels[0]
    assert first.path.name == "0_Parade_Parade_0_1014.jpg" and first.path.exists()
    # the file's first two rows: "122 380 10 12 -1 …" and "246 378 12 14 -1 …" (x y w h)
    np.testing.assert_array_equal(first.boxes, [[122, 380, 132, 392], [246, 378, 258, 392]])
    assert not first.has_landmarks.any()
    rows, empty = _face_rows(label_file)
    assert rows == 36_691 and empty == 8
    assert sum(len(e.boxes) for e in dataset.labels) == rows - empty
    sample = dataset[0]
    assert sample.image.shape == cv2.imread(str(first.path)).shape
    assert sample.labeled and sample.boxes.shape == (2, 4)


def test_wider_gt_of_the_subset():
    root = shared_path("data", "wider_val_subset200")
    dataset = WiderFaceDataset(root / "gt" / "wider_face_val_bbx_gt.txt", root / "images")
    assert len(dataset) == 200
    # README: 4,372 boxes, of which 2 have zero width or height and are dropped
    assert sum(len(e.boxes) for e in dataset.labels) == 4_372 - 2
    first = dataset.labels[0]
    assert first.path.name == "0_Parade_Parade_0_102.jpg" and first.path.exists()
    np.testing.assert_allclose(first.boxes[0], [327.44, 224.51, 327.44 + 9.75, 224.51 + 16.25], rtol=1e-6)
    assert not first.has_landmarks.any()
    auto = read_labels(root / "gt" / "wider_face_val_bbx_gt.txt", root / "images")
    assert [e.path for e in auto] == [e.path for e in dataset.labels]


def test_landmarks_are_read_and_minus_one_means_absent(tmp_path):
    label = tmp_path / "label.txt"
    label.write_text(
        "# a.jpg\n"
        "10 20 30 40 15 25 0.0 35 25 0.0 25 35 0.0 18 50 0.0 32 50 0.0 0.9\n"
        "50 60 10 10 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1\n"
        "# b.jpg\n"
    )
    a, b = read_retinaface_labels(label)
    np.testing.assert_array_equal(a.boxes, [[10, 20, 40, 60], [50, 60, 60, 70]])
    np.testing.assert_array_equal(a.landmarks[0], [[15, 25], [35, 25], [25, 35], [18, 50], [32, 50]])
    np.testing.assert_array_equal(a.has_landmarks, [True, False])
    assert a.path == tmp_path / "images" / "a.jpg"
    assert b.boxes.shape == (0, 4)


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("# a.jpg\n1 2 3\n", 2, "expected 4 or 19 or 20 numbers"),
        ("# a.jpg\n1 2 3 4\n1 2 x 4\n", 3, "expected numbers"),
        ("1 2 3 4\n# a.jpg\n", 1, "before the first '# image/path.jpg'"),
        ("# a.jpg\n\n#\n", 3, "must be followed by an image path"),
    ],
)
def test_malformed_label_lines_name_file_and_line(tmp_path, text, line, problem):
    label = tmp_path / "label.txt"
    label.write_text(text)
    with pytest.raises(LabelFormatError, match=f"label.txt:{line}: .*{problem}"):
        read_retinaface_labels(label)


def test_malformed_wider_gt_names_file_and_line(tmp_path):
    gt = tmp_path / "wider_face_val_bbx_gt.txt"
    gt.write_text("a/b.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0\n")
    with pytest.raises(LabelFormatError, match=r"bbx_gt\.txt:4: expected 10 numbers"):
        read_labels(gt, tmp_path)
    gt.write_text("a/b.jpg\ntwo\n")
    with pytest.raises(LabelFormatError, match=r"bbx_gt\.txt:2: expected the number of faces"):
        read_labels(gt, tmp_path)
    with pytest.raises(ValueError, match="pass the image folder"):
        read_labels(gt)


def test_missing_image_is_a_clear_error(tmp_path):
    label = tmp_path / "label.txt"
    label.write_text("# nowhere.jpg\n1 2 3 4\n")
    dataset = LabeledFaceDataset.from_file(label)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.jpg does not exist"):
        dataset[0]


def test_image_folder_is_unlabelled_and_augmentation_is_seeded():
    folder = shared_path("data", "dlib_faces")
    dataset = ImageFolderDataset(folder, TrainAugment(160), seed=3)
    assert len(dataset) == 12 and all(p.suffix == ".jpg" for p in dataset.paths)
    first = dataset[5]
    assert not first.labeled and first.image.shape == (160, 160, 3) and first.image.dtype == np.uint8
    np.testing.assert_array_equal(first.image, dataset[5].image)
    dataset.set_epoch(1)
    assert not np.array_equal(first.image, dataset[5].image)
    dataset.set_epoch(0)
    np.testing.assert_array_equal(first.image, dataset[5].image)


def test_collate_keeps_variable_face_counts():
    dataset = RetinaFaceDataset(
        shared_path("data", "widerface_train1000", "label.txt"), transform=TrainAugment(128)
    )
    samples = [dataset[i] for i in range(3)]
    batch = collate(samples)
    assert batch.images.shape == (3, 3, 128, 128) and batch.images.dtype == torch.uint8
    assert [len(t.boxes) for t in batch.targets] == [len(s.boxes) for s in samples]
    np.testing.assert_array_equal(batch.images[1].permute(1, 2, 0).numpy(), samples[1].image)
    assert batch.paths == [s.path for s in samples]


def test_collate_rejects_mixed_sizes():
    dataset = ImageFolderDataset(shared_path("data", "dlib_faces"))
    with pytest.raises(ValueError, match=r"must share one size.*TrainAugment"):
        collate([dataset[0], dataset[1]])

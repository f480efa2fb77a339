"""Face annotation files: RetinaFace ``label.txt`` and the official WIDER FACE ``*_bbx_gt.txt``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Values per face row in ``label.txt``: a box, a box + 5 (x, y, flag) landmarks, or that + a score.
RETINAFACE_ROW_LENGTHS = (4, 19, 20)
WIDER_ROW_LENGTH = 10


class LabelFormatError(ValueError):
    """An annotation file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class ImageLabels:
    """The faces of one image, in original image pixels.

    ``boxes (N, 4)`` as ``x1 y1 x2 y2``; ``landmarks (N, 5, 2)`` as (x, y) for left eye, right eye,
    nose, left and right mouth corner; ``has_landmarks (N,)`` is False where the file has ``-1``.
    """

    path: Path
    boxes: np.ndarray
    landmarks: np.ndarray
    has_landmarks: np.ndarray


def _numbers(tokens: list[str], file: Path, line_no: int) -> list[float]:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise LabelFormatError(f"{file}:{line_no}: expected numbers, got {' '.join(tokens)!r}") from None


def _to_labels(path: Path, rows: list[list[float]]) -> ImageLabels:
    """Rows of ``x y w h [15 landmark values [score]]`` → :class:`ImageLabels`; empty boxes dropped."""
    boxes = np.zeros((len(rows), 4), np.float32)
    landmarks = np.zeros((len(rows), 5, 2), np.float32)
    has = np.zeros(len(rows), bool)
    for i, row in enumerate(rows):
        x, y, w, h = row[:4]
        boxes[i] = (x, y, x + w, y + h)
        if len(row) >= 19 and row[4] >= 0:
            landmarks[i] = np.asarray(row[4:19], np.float32).reshape(5, 3)[:, :2]
            has[i] = True
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return ImageLabels(path, boxes[keep], landmarks[keep], has[keep])


def read_retinaface_labels(
    label_file: str | os.PathLike, image_root: str | os.PathLike | None = None
) -> list[ImageLabels]:
    """Parse a RetinaFace ``label.txt``: ``# relative/path.jpg`` lines, each followed by its faces.

    A face row is ``x y w h`` (pixels), optionally followed by 5 landmarks as ``x y flag`` triples
    (``-1`` when absent) and a score. ``image_root`` defaults to ``images/`` beside the file.
    Boxes with zero width or height are dropped. Raises :class:`LabelFormatError` with file and
    line number for anything else.
    """
    file = Path(label_file)
    root = Path(image_root) if image_root is not None else file.parent / "images"
    images: list[ImageLabels] = []
    current: Path | None = None
    rows: list[list[float]] = []
    for line_no, line in enumerate(file.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            if current is not None:
                images.append(_to_labels(current, rows))
            name = line[1:].strip()
            if not name:
                raise LabelFormatError(f"{file}:{line_no}: '#' must be followed by an image path")
            current, rows = root / name, []
            continue
        if current is None:
            raise LabelFormatError(
                f"{file}:{line_no}: face values before the first '# image/path.jpg' line; is this a "
                "RetinaFace label.txt?"
            )
        values = _numbers(line.split(), file, line_no)
        if len(values) not in RETINAFACE_ROW_LENGTHS:
            raise LabelFormatError(
                f"{file}:{line_no}: expected {' or '.join(map(str, RETINAFACE_ROW_LENGTHS))} numbers "
                f"(x y w h, then 5 landmarks as x y flag, then a score), got {len(values)}"
            )
        rows.append(values)
    if current is not None:
        images.append(_to_labels(current, rows))
    if not images:
        raise LabelFormatError(f"{file}: no '# image/path.jpg' entries found")
    return images


def read_wider_gt(gt_file: str | os.PathLike, image_root: str | os.PathLike) -> list[ImageLabels]:
    """Parse an official ``wider_face_{train,val}_bbx_gt.txt``: path, face count, then one row per face.

    Rows are ``x y w h blur expression illumination invalid occlusion pose``; only the box is
    used (no landmarks). An image with 0 faces is followed by one placeholder row. Boxes with zero
    width or height are dropped.
    """
    file = Path(gt_file)
    lines = file.read_text().splitlines()
    images: list[ImageLabels] = []
    i = 0

    def next_line() -> tuple[int, str]:
        nonlocal i
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines):
            raise LabelFormatError(f"{file}:{len(lines)}: file ends in the middle of an image entry")
        i += 1
        return i, lines[i - 1].strip()

    while True:
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines):
            break
        _, name = next_line()
        line_no, count_text = next_line()
        if not count_text.isdigit():
            raise LabelFormatError(
                f"{file}:{line_no}: expected the number of faces of {name}, got {count_text!r}"
            )
        count = int(count_text)
        rows = []
        for _ in range(max(count, 1)):
            line_no, text = next_line()
            values = _numbers(text.split(), file, line_no)
            if len(values) != WIDER_ROW_LENGTH:
                raise LabelFormatError(
                    f"{file}:{line_no}: expected {WIDER_ROW_LENGTH} numbers "
                    f"(x y w h blur expression illumination invalid occlusion pose), got {len(values)}"
                )
            rows.append(values[:4])
        images.append(_to_labels(Path(image_root) / name, rows[:count]))
    if not images:
        raise LabelFormatError(f"{file}: no image entries found")
    return images


def read_labels(
    label_file: str | os.PathLike, image_root: str | os.PathLike | None = None
) -> list[ImageLabels]:
    """Read either format, told apart by the first non-empty line (``#`` starts RetinaFace ``label.txt``)."""
    file = Path(label_file)
    if not file.is_file():
        raise FileNotFoundError(f"label file {file} does not exist")
    with file.open() as handle:
        first = next((line.strip() for line in handle if line.strip()), "")
    if first.startswith("#"):
        return read_retinaface_labels(file, image_root)
    if image_root is None:
        raise ValueError(
            f"{file} looks like an official WIDER FACE ground-truth file: pass the image folder too"
        )
    return read_wider_gt(file, image_root)

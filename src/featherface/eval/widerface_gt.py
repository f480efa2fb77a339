"""WIDER FACE ground truth: read the official ``wider_*_val.mat`` evaluation files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SETTINGS = ("easy", "medium", "hard")
FACE_FILE = "wider_face_val.mat"
SETTING_FILES = {setting: f"wider_{setting}_val.mat" for setting in SETTINGS}
_HINT = (
    "pass the folder that holds wider_face_val.mat, wider_easy_val.mat, wider_medium_val.mat and "
    "wider_hard_val.mat (eval_tools/ground_truth of the official WIDER FACE evaluation toolbox)"
)


@dataclass(frozen=True)
class WiderFaceGT:
    """The ground truth of a WIDER FACE split, in the official event / image order.

    ``images``: keys ``"<event>/<image>"`` (image name without extension).
    ``boxes``: one ``(G, 4)`` float64 array per image, ``x y w h`` in pixels; every face, including
    the ones no setting keeps (they still absorb matching predictions).
    ``keep``: per setting (``easy``, ``medium``, ``hard``), one int64 array per image with the
    0-based indices of the faces that setting scores.
    """

    images: tuple[str, ...]
    boxes: tuple[np.ndarray, ...]
    keep: dict[str, tuple[np.ndarray, ...]]

    def num_faces(self, setting: str) -> int:
        """Number of faces a setting scores over the whole split."""
        return sum(len(k) for k in self.keep[setting])


def _loadmat(path: Path, names: list[str]) -> dict:
    try:
        from scipy.io import loadmat
    except ImportError as error:
        raise ImportError(
            "WIDER FACE evaluation reads the official .mat files with scipy; "
            "install it with: pip install 'featherface[eval]'"
        ) from error
    try:
        return loadmat(str(path), variable_names=names)
    except Exception as error:
        raise ValueError(f"{path} is not a readable MATLAB .mat file ({error}); {_HINT}") from error


def _field(mat: dict, key: str, path: Path) -> np.ndarray:
    if key not in mat:
        raise ValueError(f"{path} has no '{key}' variable: it is not an official WIDER FACE file; {_HINT}")
    return mat[key]


def _check_paths(gt_dir: Path) -> None:
    if gt_dir.is_file():
        raise ValueError(f"gt_dir {gt_dir} is a file, not a folder: {_HINT}")
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"gt_dir {gt_dir} does not exist; {_HINT}")
    names = (FACE_FILE, *SETTING_FILES.values())
    missing = [name for name in names if not (gt_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"gt_dir {gt_dir} lacks {', '.join(missing)}; {_HINT}")


def load_widerface_gt(gt_dir: str | os.PathLike) -> WiderFaceGT:
    """Read the official evaluation files in ``gt_dir`` into a :class:`WiderFaceGT`.

    Raises ``FileNotFoundError`` for a missing folder or file and ``ValueError`` for a file given
    as the folder, or files that are not the official ones or disagree with each other.
    """
    gt_dir = Path(gt_dir)
    _check_paths(gt_dir)
    face_path = gt_dir / FACE_FILE
    face_mat = _loadmat(face_path, ["event_list", "file_list", "face_bbx_list"])
    events = _field(face_mat, "event_list", face_path)
    files = _field(face_mat, "file_list", face_path)
    bbx = _field(face_mat, "face_bbx_list", face_path)
    images, boxes = [], []
    for e in range(len(events)):
        event = str(events[e, 0][0])
        for f in range(len(files[e, 0])):
            images.append(f"{event}/{files[e, 0][f, 0][0]}")
            boxes.append(np.asarray(bbx[e, 0][f, 0], dtype=np.float64).reshape(-1, 4))
    keep = {}
    for setting, name in SETTING_FILES.items():
        path = gt_dir / name
        gt_list = _field(_loadmat(path, ["gt_list"]), "gt_list", path)
        per_image = [gt_list[e, 0][f, 0] for e in range(len(gt_list)) for f in range(len(gt_list[e, 0]))]
        if len(gt_list) != len(events) or len(per_image) != len(images):
            raise ValueError(
                f"{path} lists {len(per_image)} images in {len(gt_list)} events but {face_path} lists "
                f"{len(images)} in {len(events)}: the files come from different splits; {_HINT}"
            )
        keep[setting] = _keep_indices(per_image, [len(b) for b in boxes], images, path)
    return WiderFaceGT(tuple(images), tuple(boxes), keep)


def _keep_indices(
    raw: list[np.ndarray], num_boxes: list[int], images: list[str], path: Path
) -> tuple[np.ndarray, ...]:
    """0-based kept-face indices per image, checked against each image's number of boxes."""
    per_image = [np.asarray(k, dtype=np.int64).reshape(-1) - 1 for k in raw]
    lengths = [len(k) for k in per_image]
    index = np.concatenate([np.zeros(0, np.int64), *per_image])
    outside = np.flatnonzero((index < 0) | (index >= np.repeat(num_boxes, lengths)))
    if outside.size:
        image = int(np.searchsorted(np.cumsum(lengths), outside[0], side="right"))
        raise ValueError(
            f"{path}: the kept face indices of {images[image]} run outside its {num_boxes[image]} boxes; "
            "the file does not belong to this wider_face_val.mat"
        )
    return tuple(per_image)

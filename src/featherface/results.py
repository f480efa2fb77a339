"""Detection results: :class:`Faces` for one image, with conversion, drawing and alignment."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from featherface.align import align_faces
from featherface.io import ImageInput, load_image

Array = torch.Tensor | np.ndarray

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
LANDMARK_COLORS = ((255, 0, 0), (0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 255, 0))


@dataclass(frozen=True)
class Face:
    """One detection: ``box (4,)`` xyxy pixels, ``score``, ``landmarks (5, 2)`` pixels."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray


def _as_numpy(values: Array) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


class Faces:
    """The faces found in one image, sorted by descending score.

    Attributes:
        boxes: ``(N, 4)`` float32 ``x1 y1 x2 y2`` in original-image pixels.
        scores: ``(N,)`` face probabilities.
        landmarks: ``(N, 5, 2)`` points in pixels: left eye, right eye, nose, left and right
            mouth corners (the subject's left and right, as in RetinaFace annotations).
        image_size: ``(height, width)`` of the image the faces were found in.

    Arrays are torch tensors on the detector's device; :meth:`numpy` converts them.
    """

    def __init__(self, boxes: Array, scores: Array, landmarks: Array, image_size: tuple[int, int]) -> None:
        if not (len(boxes) == len(scores) == len(landmarks)):
            raise ValueError(
                f"boxes, scores and landmarks must have the same length, got "
                f"{len(boxes)}, {len(scores)}, {len(landmarks)}"
            )
        self.boxes = boxes
        self.scores = scores
        self.landmarks = landmarks
        self.image_size = (int(image_size[0]), int(image_size[1]))

    @classmethod
    def empty(cls, image_size: tuple[int, int], device: torch.device | str = "cpu") -> Faces:
        """No faces: shapes ``(0, 4)``, ``(0,)``, ``(0, 5, 2)``."""
        return cls(
            torch.zeros(0, 4, device=device),
            torch.zeros(0, device=device),
            torch.zeros(0, 5, 2, device=device),
            image_size,
        )

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[Face]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int | slice | Array) -> Face | Faces:
        if isinstance(index, (int, np.integer)):
            if not -len(self) <= index < len(self):
                raise IndexError(f"face index {index} out of range for {len(self)} faces")
            return Face(
                _as_numpy(self.boxes[index]).astype(np.float32),
                float(self.scores[index]),
                _as_numpy(self.landmarks[index]).astype(np.float32),
            )
        return Faces(self.boxes[index], self.scores[index], self.landmarks[index], self.image_size)

    def __repr__(self) -> str:
        return f"Faces({len(self)} faces in a {self.image_size[0]}×{self.image_size[1]} image)"

    def to(self, device: torch.device | str) -> Faces:
        """A copy with tensors on ``device``."""
        return Faces(*(torch.as_tensor(v).to(device) for v in self._arrays()), self.image_size)

    def cpu(self) -> Faces:
        """A copy with tensors on the CPU."""
        return self.to("cpu")

    def numpy(self) -> Faces:
        """A copy holding float32 numpy arrays."""
        return Faces(*(_as_numpy(v).astype(np.float32) for v in self._arrays()), self.image_size)

    def _arrays(self) -> tuple[Array, Array, Array]:
        return self.boxes, self.scores, self.landmarks

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form: ``{"image_size": [h, w], "faces": [{"box", "score", "landmarks"}, ...]}``."""
        boxes, scores, landmarks = (_as_numpy(v).astype(np.float64) for v in self._arrays())
        return {
            "image_size": list(self.image_size),
            "faces": [
                {
                    "box": box.round(2).tolist(),
                    "score": round(float(score), 5),
                    "landmarks": pts.round(2).tolist(),
                }
                for box, score, pts in zip(boxes, scores, landmarks)
            ],
        }

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as a JSON string (``kwargs`` go to ``json.dumps``)."""
        return json.dumps(self.to_dict(), **kwargs)

    def _image(self, image: ImageInput) -> np.ndarray:
        pixels = load_image(image)
        if isinstance(pixels, torch.Tensor):
            pixels = pixels.permute(1, 2, 0).round().clamp(0, 255).byte().cpu().numpy()
        if pixels.shape[:2] != self.image_size:
            raise ValueError(
                f"these faces were found in a {self.image_size[0]}×{self.image_size[1]} image, "
                f"got an image of {pixels.shape[0]}×{pixels.shape[1]}"
            )
        return pixels

    def draw(
        self,
        image: ImageInput,
        color: tuple[int, int, int] = (0, 255, 0),
        thickness: int | None = None,
        scores: bool = True,
        landmarks: bool = True,
    ) -> np.ndarray:
        """An annotated copy of ``image`` (``H×W×3`` uint8 BGR): boxes, scores and landmarks."""
        canvas = self._image(image).copy()
        thickness = thickness or max(1, round(max(self.image_size) / 400))
        for face in self:
            x1, y1, x2, y2 = (round(float(v)) for v in face.box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
            if scores:
                scale = 0.4 * thickness
                cv2.putText(
                    canvas,
                    f"{face.score:.2f}",
                    (x1, max(y1 - 3, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    scale,
                    color,
                    max(1, thickness // 2),
                    cv2.LINE_AA,
                )
            if landmarks:
                for (x, y), point_color in zip(face.landmarks, LANDMARK_COLORS):
                    cv2.circle(
                        canvas,
                        (round(float(x)), round(float(y))),
                        thickness + 1,
                        point_color,
                        -1,
                        cv2.LINE_AA,
                    )
        return canvas

    def aligned_crops(self, image: ImageInput, size: int = 112) -> np.ndarray:
        """``(N, size, size, 3)`` uint8 BGR crops aligned to the ArcFace 5-point template."""
        return align_faces(self._image(image), _as_numpy(self.landmarks), size)

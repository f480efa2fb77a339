"""Regenerate the documentation figures from the shared data (run from the repository root).

python docs/make_figures.py
"""

from __future__ import annotations

from pathlib import Path

import cv2

from featherface import FaceDetector

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main() -> None:
    photo = SHARED / "data" / "dlib_faces" / "bald_guys.jpg"
    detector = FaceDetector(
        "featherface_v1", checkpoint_path=SHARED / "weights" / "featherface_v1_widerface.pth", device="cpu"
    )
    faces = detector(str(photo))
    drawn = faces.draw(str(photo))
    scale = 1000 / drawn.shape[1]
    small = cv2.resize(drawn, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out = ROOT / "docs" / "assets" / "detections.jpg"
    cv2.imwrite(str(out), small, [cv2.IMWRITE_JPEG_QUALITY, 82])
    print(f"{len(faces)} faces drawn; wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

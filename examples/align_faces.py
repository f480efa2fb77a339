"""Detect faces and save each one aligned to the 112×112 ArcFace template (for face recognition).

    python examples/align_faces.py ../shared/data/dlib_faces/2008_002470.jpg --out-dir crops \
        --checkpoint ../shared/weights/featherface_v1_widerface.pth
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

from featherface import FaceDetector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="photo with faces")
    parser.add_argument("--model", default="featherface_v1", help="registered model name")
    parser.add_argument("--checkpoint", default=None, help="weights file (default: pretrained weights)")
    parser.add_argument("--size", type=int, default=112, help="crop side in pixels")
    parser.add_argument("--out-dir", default="crops", help="folder for the aligned crops")
    args = parser.parse_args()

    detector = FaceDetector(args.model, checkpoint_path=args.checkpoint)
    faces = detector(args.image)
    crops = faces.aligned_crops(args.image, size=args.size)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, (crop, face) in enumerate(zip(crops, faces)):
        cv2.imwrite(str(out_dir / f"face_{index:02d}_{face.score:.2f}.png"), crop)
    print(f"{len(crops)} aligned {args.size}×{args.size} crops written to {out_dir}")


if __name__ == "__main__":
    main()

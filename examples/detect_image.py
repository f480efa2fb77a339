"""Detect faces in one photo, print them and save an annotated copy.

    python examples/detect_image.py ../shared/data/dlib_faces/bald_guys.jpg \
        --checkpoint ../shared/weights/featherface_v1_widerface.pth --out faces.jpg
"""

from __future__ import annotations

import argparse

import cv2

from featherface import FaceDetector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="photo to search for faces")
    parser.add_argument("--model", default="featherface_v1", help="registered model name")
    parser.add_argument("--checkpoint", default=None, help="weights file (default: pretrained weights)")
    parser.add_argument("--threshold", type=float, default=0.5, help="minimum face score")
    parser.add_argument("--out", default="faces.jpg", help="where to write the annotated photo")
    args = parser.parse_args()

    detector = FaceDetector(args.model, checkpoint_path=args.checkpoint, score_threshold=args.threshold)
    faces = detector(args.image)
    for face in faces:
        x1, y1, x2, y2 = face.box.round(1)
        print(f"face at ({x1}, {y1})–({x2}, {y2}), score {face.score:.3f}")
    cv2.imwrite(args.out, faces.draw(args.image))
    print(f"{len(faces)} faces; annotated photo written to {args.out}")


if __name__ == "__main__":
    main()

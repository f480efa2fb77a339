"""Detect faces in every frame of a video (or a camera) and write an annotated video.

    python examples/video.py clip.mp4 --out annotated.avi \
        --checkpoint ../shared/weights/featherface_v1_widerface.pth
    python examples/video.py 0          # the first camera
    python examples/video.py clip.mp4 --model featherface_v2 --compile

Frames are processed as a stream, so memory stays constant however long the video. Every frame
has the same size, so ``--compile`` (``torch.compile``; the first frame waits for the
compilation, about a minute on two CPU cores) makes every later frame faster.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator

import cv2

from featherface import FaceDetector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="video file, or a camera index such as 0")
    parser.add_argument("--model", default="featherface_v1", help="registered model name")
    parser.add_argument("--checkpoint", default=None, help="weights file (default: pretrained weights)")
    parser.add_argument("--input-size", type=int, default=640, help="cap the frames' long side (pixels)")
    parser.add_argument("--out", default="annotated.avi", help="annotated video (MJPG AVI)")
    parser.add_argument("--compile", action="store_true", help="run the network through torch.compile")
    args = parser.parse_args()

    capture = cv2.VideoCapture(int(args.source) if args.source.isdigit() else args.source)
    if not capture.isOpened():
        raise SystemExit(f"cannot open {args.source}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    detector = FaceDetector(
        args.model, checkpoint_path=args.checkpoint, input_size=args.input_size, compile=args.compile
    )
    writer = None
    frames = faces_seen = 0
    frames_to_draw, frames_to_detect = itertools.tee(_frames(capture))
    for frame, faces in zip(frames_to_draw, detector.stream(frames_to_detect)):
        if writer is None:
            height, width = frame.shape[:2]
            writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
        writer.write(faces.draw(frame))
        frames += 1
        faces_seen += len(faces)
    capture.release()
    if writer is not None:
        writer.release()
    print(f"{frames} frames, {faces_seen} faces; annotated video written to {args.out}")


def _frames(capture: cv2.VideoCapture) -> Iterator:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


if __name__ == "__main__":
    main()

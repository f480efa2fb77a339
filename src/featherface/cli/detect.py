"""``featherface detect``: faces in files, folders and globs → annotated images and JSON."""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pgm", ".ppm"}


def expand_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """``(file, name)`` pairs for files, folders (recursive, image suffixes only) and globs.

    ``name`` is the path used for outputs: the file name, or its path relative to a given folder.
    A file reached twice (say by a folder and a glob) is listed once. Raises ``FileNotFoundError``
    for an input that matches nothing.
    """
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            found += [(f, f.relative_to(path)) for f in files]
        elif path.exists():
            found.append((path, Path(path.name)))
        elif glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                raise FileNotFoundError(f"no files match {item!r}")
            found += [(m, Path(m.name)) for m in matches]
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
    unique: dict[Path, tuple[Path, Path]] = {}
    for path, name in found:
        unique.setdefault(path.resolve(), (path, name))
    return list(unique.values())


def run(args: argparse.Namespace) -> int:
    """Detect faces in every input; report and skip unreadable files."""
    from featherface.detector import FaceDetector
    from featherface.io import load_image

    files = expand_inputs(args.inputs)
    detector = FaceDetector(
        args.model,
        checkpoint_path=args.checkpoint,
        device=args.device,
        score_threshold=args.threshold,
        input_size=args.input_size,
    )
    out_dir = Path(args.out) if args.out else None
    results: dict[str, dict] = {}
    failures: list[str] = []
    pending: list[tuple[Path, Path, object]] = []

    def flush() -> None:
        if not pending:
            return
        for (path, name, pixels), faces in zip(pending, detector.detect([p for _, _, p in pending])):
            results[str(path)] = faces.to_dict()
            if not args.quiet:
                print(f"{path}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
            if out_dir is not None:
                target = out_dir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(target.with_suffix(".jpg")), faces.draw(pixels)):
                    failures.append(str(path))
                    print(f"{path}: error: could not write {target.with_suffix('.jpg')}", file=sys.stderr)
        pending.clear()

    for path, name in tqdm(files, desc="detect", unit="img", disable=len(files) < 2):
        try:
            pending.append((path, name, load_image(path)))
        except (ValueError, FileNotFoundError) as error:
            failures.append(str(path))
            print(f"{path}: error: {error} (skipped)", file=sys.stderr)
        if len(pending) >= args.batch_size:
            flush()
    flush()

    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    total = sum(len(r["faces"]) for r in results.values())
    print(f"{total} faces in {len(results)} images; {len(failures)} failed", file=sys.stderr)
    return 1 if failures else 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("detect", help="detect faces in images, folders or globs")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("--model", default="featherface_v1", help="model name (default: featherface_v1)")
    parser.add_argument("--checkpoint", default=None, help="weights file to use instead of pretrained ones")
    parser.add_argument("--out", default=None, metavar="DIR", help="write annotated images here")
    parser.add_argument("--json", default=None, metavar="FILE", help="write all faces as JSON here")
    parser.add_argument("--threshold", type=float, default=None, help="minimum face score (default 0.5)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: CUDA if available)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    parser.add_argument("--input-size", type=int, default=None, help="cap the long side at this many pixels")
    parser.add_argument("--quiet", action="store_true", help="do not print a line per image")
    parser.set_defaults(handler=run)

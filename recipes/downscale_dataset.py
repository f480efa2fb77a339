"""Make a smaller copy of a RetinaFace-format dataset: images scaled and re-encoded, boxes scaled.

    python recipes/downscale_dataset.py ../shared/data/widerface_train1000 runs/train800 --scale 0.8

The GPU stages of the measured featherface_v2.widerface_kd run trained on such copies, to fit the
training data into a GPU machine's 64 MiB transfer limit: stages 1–3 on ×0.8 at WebP quality 70,
stage 6 on full-size images at quality 40 (``--scale 1 --quality 40``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder with label.txt and images/")
    parser.add_argument("target", type=Path, help="output folder")
    parser.add_argument("--scale", type=float, default=0.8, help="image scale factor")
    parser.add_argument("--quality", type=int, default=70, help="WebP quality")
    args = parser.parse_args()

    lines = []
    for line in (args.source / "label.txt").read_text().splitlines():
        if line.startswith("#"):
            name = line[1:].strip()
            image = cv2.imread(str(args.source / "images" / name))
            if image is None:
                raise SystemExit(f"cannot read {args.source / 'images' / name}")
            image = cv2.resize(image, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_AREA)
            new_name = str(Path(name).with_suffix(".webp"))
            out = args.target / "images" / new_name
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), image, [cv2.IMWRITE_WEBP_QUALITY, args.quality])
            lines.append(f"# {new_name}")
        elif line.strip():
            values = [float(v) for v in line.split()]
            coordinates = [0, 1, 2, 3] + [4 + 3 * k + j for k in range(5) for j in (0, 1)]
            for i in coordinates:
                if i < len(values) and values[i] != -1.0:  # -1 marks a missing landmark
                    values[i] = round(values[i] * args.scale, 2)
            lines.append(" ".join(f"{v:g}" for v in values))
    (args.target / "label.txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {sum(line.startswith('#') for line in lines)} images to {args.target}")


if __name__ == "__main__":
    main()

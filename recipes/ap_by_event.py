"""WIDER FACE average precision per event class, for one or more detectors' prediction files.

    python recipes/ap_by_event.py --gt GT_DIR --predictions NAME=PRED_DIR [--predictions ...]
        [--group 0,1,2] [--min-faces 20] [--json OUT.json]

WIDER FACE's 61 event classes (Parade, Handshaking, …) differ in crowding, pose and scale. Scores
each ``--predictions`` folder (``featherface eval widerface --out DIR`` writes one under
``DIR/predictions``) with the official protocol on the images of each event alone, and prints
the hard-setting AP per event with at least ``--min-faces`` hard faces, sorted by the ratio of
the last detector's AP to the first's. With ``--group E,E,...`` it also scores the images of
those events together and the other events, if any, together (easy / medium / hard): a detector trained
on a few event classes can be compared on them and on the events it never saw.

Scores are normalised within each subset (as the protocol does over the whole split), so an
event's AP can differ from what a per-event toolbox run would give by the rounding of its
1,000 score thresholds.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from featherface.eval.widerface import evaluate_widerface
from featherface.eval.widerface_files import read_widerface_predictions
from featherface.eval.widerface_gt import SETTINGS, WiderFaceGT, load_widerface_gt


def event_of(image: str) -> int:
    """``"12--Group/12_Group_Group_12_10"`` → 12."""
    return int(image.split("--", 1)[0])


def subset(gt: WiderFaceGT, keep: Callable[[str], bool]) -> WiderFaceGT:
    """The images of ``gt`` for which ``keep(image)`` holds, in their order."""
    chosen = [i for i, image in enumerate(gt.images) if keep(image)]
    return WiderFaceGT(
        tuple(gt.images[i] for i in chosen),
        tuple(gt.boxes[i] for i in chosen),
        {setting: tuple(gt.keep[setting][i] for i in chosen) for setting in gt.keep},
    )


def score_subset(predictions: dict[str, np.ndarray], gt: WiderFaceGT) -> dict[str, float]:
    """Easy / medium / hard AP of the predictions for ``gt``'s images, and the hard faces."""
    images = set(gt.images)
    result = evaluate_widerface({k: v for k, v in predictions.items() if k in images}, gt)
    return {**{s: round(float(result[s]), 4) for s in SETTINGS}, "hard_faces": gt.num_faces("hard")}


def ap_by_event(
    runs: dict[str, dict[str, np.ndarray]], gt: WiderFaceGT, group: set[int] | None = None
) -> dict[str, dict]:
    """``{"events": {event: {run: scores}}, "groups": {name: {run: scores}}}`` (see :func:`score_subset`)."""
    report: dict[str, dict] = {"events": {}, "groups": {}}
    for event in sorted({event_of(image) for image in gt.images}):
        part = subset(gt, lambda image, event=event: event_of(image) == event)
        report["events"][event] = {name: score_subset(p, part) for name, p in runs.items()}
    if group:
        for name, keep in (
            ("events " + ",".join(map(str, sorted(group))), lambda image: event_of(image) in group),
            ("other events", lambda image: event_of(image) not in group),
        ):
            part = subset(gt, keep)
            if part.images:
                report["groups"][name] = {run: score_subset(p, part) for run, p in runs.items()}
    return report


def _named_folder(spec: str) -> tuple[str, Path]:
    name, sep, folder = spec.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=PRED_DIR, got {spec!r}")
    return name, Path(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gt", type=Path, required=True, help="folder of wider_{face,easy,medium,hard}_val.mat"
    )
    parser.add_argument(
        "--predictions",
        type=_named_folder,
        action="append",
        required=True,
        metavar="NAME=PRED_DIR",
        help="prediction files in the official layout (repeatable; ratios are to the first)",
    )
    parser.add_argument("--group", default="", metavar="E,E,...", help="event numbers scored together")
    parser.add_argument("--min-faces", type=int, default=20, help="leave out events with fewer hard faces")
    parser.add_argument("--json", type=Path, default=None, help="also write every score here")
    args = parser.parse_args()
    gt = load_widerface_gt(args.gt)
    runs = {name: read_widerface_predictions(folder) for name, folder in args.predictions}
    try:
        group = {int(e) for e in args.group.split(",") if e.strip()}
    except ValueError:
        parser.error(f"--group takes event numbers separated by commas, got {args.group!r}")
    report = ap_by_event(runs, gt, group)
    names = list(runs)
    first, last = names[0], names[-1]
    rows = [
        (scores[last]["hard"] / max(scores[first]["hard"], 1e-9), event, scores)
        for event, scores in report["events"].items()
        if scores[first]["hard_faces"] >= args.min_faces
    ]
    print("| event | hard faces | " + " | ".join(f"{n} hard AP" for n in names) + f" | {last} / {first} |")
    print("|---:|---:|" + "---:|" * (len(names) + 1))
    for ratio, event, scores in sorted(rows, key=lambda row: row[:2]):
        cells = " | ".join(f"{scores[n]['hard']:.3f}" for n in names)
        print(f"| {event} | {scores[first]['hard_faces']} | {cells} | {ratio:.3f} |")
    for group_name, scores in report["groups"].items():
        print(f"\n{group_name} ({scores[first]['hard_faces']} hard faces), easy / medium / hard:")
        for name in names:
            print(f"  {name}: " + " / ".join(f"{scores[name][s]:.4f}" for s in SETTINGS))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""WIDER FACE prediction files in the official layout: ``<event>/<image>.txt``, read and written.

Each file holds the image name on line 1, the number of boxes on line 2, then one ``x y w h score``
row per box (pixels; ``w``, ``h`` follow the toolbox convention, ``x2 = x + w``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

_ROW = "'x y w h score'"


class PredictionFileError(ValueError):
    """A prediction file does not follow the official WIDER FACE layout."""


def _error(path: Path, line: int, problem: str) -> PredictionFileError:
    return PredictionFileError(
        f"{path}, line {line}: {problem}. Prediction files hold the image name on line 1, the box count "
        f"on line 2, then one {_ROW} row per box"
    )


def _locate_bad_row(path: Path, rows: list[str]) -> PredictionFileError:
    """The error for the first row that is not five numbers (only called once parsing has failed)."""
    for number, row in enumerate(rows, start=3):
        tokens = row.split()
        if len(tokens) != 5:
            return _error(path, number, f"expected 5 numbers {_ROW}, got {len(tokens)}: {row.strip()!r}")
        try:
            [float(token) for token in tokens]
        except ValueError:
            return _error(path, number, f"not a number in {row.strip()!r}")
    return _error(path, 3, "the rows could not be parsed")


def read_prediction_file(path: str | os.PathLike) -> np.ndarray:
    """Read one prediction file into an ``(N, 5)`` float64 array of ``x y w h score`` rows.

    Raises :class:`PredictionFileError` naming the file and line of the first problem.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2:
        raise _error(path, len(lines) + 1, "the file ends before the box count")
    try:
        count = int(lines[1])
    except ValueError:
        raise _error(path, 2, f"the box count must be an integer, got {lines[1].strip()!r}") from None
    rows = lines[2:]
    if count != len(rows):
        raise _error(path, 2, f"the box count says {count} but the file has {len(rows)} box rows")
    if count == 0:
        return np.zeros((0, 5))
    try:
        values = np.loadtxt(rows, dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        raise _locate_bad_row(path, rows) from None
    if values.shape[1] != 5:
        raise _locate_bad_row(path, rows)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        raise _error(path, int(bad[0]) + 3, f"non-finite value in {rows[bad[0]].strip()!r}")
    return values


def read_widerface_predictions(pred_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every ``<event>/<image>.txt`` under ``pred_dir`` into ``{"<event>/<image>": (N, 5) array}``."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder {pred_dir} does not exist (or is not a folder)")
    files = sorted(pred_dir.glob("*/*.txt"))
    if not files:
        nested = sorted(pred_dir.glob("*/*/*/*.txt"))
        hint = f"; did you mean {nested[0].parents[1]}?" if nested else ""
        raise FileNotFoundError(
            f"no prediction files in {pred_dir}: expected the official layout <event>/<image>.txt{hint}"
        )
    return {f"{path.parent.name}/{path.stem}": read_prediction_file(path) for path in files}


def write_widerface_predictions(predictions: Mapping[str, np.ndarray], out_dir: str | os.PathLike) -> Path:
    """Write ``{"<event>/<image>": (N, 5) x y w h score}`` as ``out_dir/<event>/<image>.txt``.

    Rows go in descending score order, boxes with 3 decimals, scores with 10 significant digits.
    Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    for key, array in predictions.items():
        event, _, image = key.partition("/")
        if not event or not image or "/" in image:
            raise ValueError(f"prediction key {key!r} is not of the form '<event>/<image>'")
        rows = np.asarray(array, dtype=np.float64).reshape(-1, 5)
        rows = rows[np.argsort(-rows[:, 4], kind="stable")]
        path = out_dir / event / f"{image}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [image, str(len(rows))]
        lines += [f"{x:.3f} {y:.3f} {w:.3f} {h:.3f} {s:.10g}" for x, y, w, h, s in rows.tolist()]
        path.write_text("\n".join(lines) + "\n")
    return out_dir

"""Precision–recall curve PNGs of a WIDER FACE evaluation (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

import os
from pathlib import Path

from featherface.eval.widerface_gt import SETTINGS


def save_pr_curves(result: dict, out_dir: str | os.PathLike, label: str = "featherface") -> list[Path]:
    """Write ``out_dir/pr_<setting>.png`` for easy, medium and hard from :func:`evaluate_widerface`'s result.

    Returns the written paths. Raises ``ImportError`` with the install command when matplotlib is absent.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("PR curve plots need matplotlib: pip install 'featherface[plot]'") from error
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for setting in SETTINGS:
        curve = result["pr_curves"][setting]
        figure = Figure(figsize=(5, 4.5), layout="constrained")
        axes = figure.add_subplot()
        axes.plot(curve["recall"], curve["precision"], label=f"{label} ({result[setting]:.4f})")
        axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision")
        axes.set_title(f"WIDER FACE {setting}: AP {result[setting]:.4f}")
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left")
        path = out_dir / f"pr_{setting}.png"
        figure.savefig(path, dpi=120)
        paths.append(path)
    return paths

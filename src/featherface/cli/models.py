"""``featherface models``: the model table."""

from __future__ import annotations

import argparse

from featherface.models.registry import get_model_cfg, list_models


def _format_metrics(metrics: dict) -> str:
    parts = []
    for bench, values in metrics.items():
        numbers = "/".join(f"{values[k]:.4f}" for k in ("easy", "medium", "hard") if k in values)
        parts.append(f"{bench} {numbers} (E/M/H)")
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Print name, parameters, pretrained tags and metrics of every matching model."""
    rows = [("name", "params", "pretrained tags", "metrics")]
    for arch in list_models(args.pattern):
        cfg = get_model_cfg(arch)
        tags = ", ".join(f"{arch}.{t}" for t in cfg.weights) or "-"
        metrics = "; ".join(filter(None, (_format_metrics(dict(w.metrics)) for w in cfg.weights.values())))
        rows.append((arch, f"{cfg.num_params:,}", tags, metrics or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3])
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("models", help="list models, parameter counts and pretrained weights")
    parser.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern (default: all)")
    parser.set_defaults(handler=run)

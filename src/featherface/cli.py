"""Command-line front end: ``featherface <command>``; thin argparse over the library functions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from featherface.models.registry import get_model_cfg, list_models
from featherface.version import __version__


def _format_metrics(metrics: dict) -> str:
    parts = []
    for bench, values in metrics.items():
        numbers = "/".join(f"{values[k]:.4f}" for k in ("easy", "medium", "hard") if k in values)
        parts.append(f"{bench} {numbers} (E/M/H)")
    return "; ".join(parts) or "-"


def cmd_models(args: argparse.Namespace) -> int:
    """Print the model table."""
    rows = [("name", "params", "pretrained tags", "metrics")]
    for arch in list_models(args.pattern):
        cfg = get_model_cfg(arch)
        tags = ", ".join(f"{arch}.{t}" for t in cfg.weights) or "-"
        metrics = "; ".join(_format_metrics(dict(w.metrics)) for w in cfg.weights.values()) or "-"
        rows.append((arch, f"{cfg.num_params:,}", tags, metrics))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3])
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    """Convert, import or describe weights."""
    from featherface import weights

    if args.weights_command == "convert":
        digest = weights.convert_checkpoint(args.input, args.output, args.model)
        print(f"wrote {args.output} (sha256 {digest})")
    elif args.weights_command == "import":
        path = weights.import_to_hub_cache(args.input, args.model, cache_dir=args.cache_dir)
        print(f"installed {args.model} weights at {path}; pretrained=True now works offline")
    else:
        print(weights.describe_weights(args.model))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``featherface`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="featherface", description="Lightweight face detection.")
    parser.add_argument("--version", action="version", version=f"featherface {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = commands.add_parser("models", help="list models, parameter counts and pretrained weights")
    models.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern (default: all)")
    models.set_defaults(handler=cmd_models)

    weights = commands.add_parser(
        "weights", help="convert legacy checkpoints, import weights for offline use"
    )
    weight_commands = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    convert = weight_commands.add_parser("convert", help="convert a legacy .pth checkpoint to safetensors")
    convert.add_argument("input", help="legacy checkpoint (.pth)")
    convert.add_argument("output", help="output .safetensors file")
    convert.add_argument("--model", default="featherface_v1", help="architecture (default: featherface_v1)")
    imp = weight_commands.add_parser("import", help="convert and install weights into the Hugging Face cache")
    imp.add_argument("input", help="legacy .pth or .safetensors file")
    imp.add_argument("--model", required=True, help="weights name, e.g. featherface_v1.widerface")
    imp.add_argument("--cache-dir", default=None, help="Hub cache folder (default: HF_HUB_CACHE)")
    info = weight_commands.add_parser("info", help="print a weight set's registry entry as JSON")
    info.add_argument("model", help="weights name, e.g. featherface_v1.widerface")
    weights.set_defaults(handler=cmd_weights)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``featherface`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as error:
        print(f"featherface {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Command-line front end: ``featherface <command>``, a thin argparse layer over the library.

Each command lives in its own module exposing ``add_parser(subparsers)``, which registers the
sub-parser and sets ``handler`` (a function ``args -> exit status``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from featherface.version import __version__

COMMAND_MODULES = ("models", "weights", "detect", "eval", "train", "distill", "export", "benchmark")


def build_parser() -> argparse.ArgumentParser:
    """The ``featherface`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="featherface", description="Lightweight face detection.")
    parser.add_argument("--version", action="version", version=f"featherface {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"featherface.cli.{name}").add_parser(commands)
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
    except KeyboardInterrupt:
        print(f"featherface {args.command}: interrupted", file=sys.stderr)
        return 130

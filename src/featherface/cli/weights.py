"""``featherface weights convert | import | info``."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
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


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("weights", help="convert legacy checkpoints, import weights for offline use")
    actions = parser.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    convert = actions.add_parser("convert", help="convert a legacy .pth checkpoint to safetensors")
    convert.add_argument("input", help="legacy checkpoint (.pth)")
    convert.add_argument("output", help="output .safetensors file")
    convert.add_argument("--model", default="featherface_v1", help="architecture (default: featherface_v1)")
    imp = actions.add_parser("import", help="convert and install weights into the Hugging Face cache")
    imp.add_argument("input", help="legacy .pth or .safetensors file")
    imp.add_argument("--model", required=True, help="weights name, e.g. featherface_v1.widerface")
    imp.add_argument("--cache-dir", default=None, help="Hub cache folder (default: HF_HUB_CACHE)")
    info = actions.add_parser("info", help="print a weight set's registry entry as JSON")
    info.add_argument("model", help="weights name, e.g. featherface_v1.widerface")
    parser.set_defaults(handler=run)

"""``featherface export onnx | torchscript``: write a deployable model and check it numerically."""

from __future__ import annotations

import argparse


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must look like HEIGHTxWIDTH (e.g. 480x640), got {text!r}"
        ) from None
    if height < 32 or width < 32:
        raise argparse.ArgumentTypeError(f"size must be at least 32x32, got {text!r}")
    return height, width


def _channel_block(text: str) -> int | None:
    if text == "auto":
        from featherface.export import cpu_channel_block

        return cpu_channel_block()
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"channel block must be a positive integer or auto, got {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    """Build the model, export it, print the check."""
    from featherface.export import export_onnx, export_torchscript
    from featherface.factory import create_model

    if args.format != "onnx" and args.channel_block is not None:
        raise ValueError("--channel-block applies to ONNX export only (ONNX Runtime's blocked layout)")
    model = create_model(args.model, pretrained=args.checkpoint is None, checkpoint_path=args.checkpoint)
    common = {"input_size": args.input_size, "check_images": args.check_images, "fuse": not args.no_fuse}
    if args.format == "onnx":
        report = export_onnx(
            model,
            args.output,
            dynamic=args.dynamic,
            opset=args.opset,
            channel_block=args.channel_block,
            **common,
        )
    else:
        report = export_torchscript(model, args.output, **common)
    print(report.summary())
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export", help="export a model to ONNX or TorchScript, checked against PyTorch"
    )
    parser.add_argument("format", choices=("onnx", "torchscript"), help="output format")
    parser.add_argument(
        "--model", required=True, help="model name, e.g. featherface_v1 or featherface_v1.widerface"
    )
    parser.add_argument("--checkpoint", default=None, help="weights file (default: the pretrained weights)")
    parser.add_argument("--output", required=True, help="file to write (.onnx or .pt)")
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="ONNX: free batch, height and width (default: fixed size)",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version (default: 17)")
    parser.add_argument(
        "--channel-block",
        type=_channel_block,
        default=None,
        metavar="N",
        help="ONNX: widen the 8-channel stem with zero channels to a multiple of N (16 suits ONNX "
        "Runtime on AVX-512 CPUs; auto: this machine's; same outputs)",
    )
    parser.add_argument(
        "--input-size",
        type=_size,
        default=(480, 640),
        help="HEIGHTxWIDTH traced (the fixed size without --dynamic)",
    )
    parser.add_argument(
        "--check-images",
        nargs="+",
        default=None,
        metavar="IMAGE",
        help="real images for the numeric check (default: a synthetic pattern)",
    )
    parser.add_argument(
        "--no-fuse", action="store_true", help="export the unfused model (same outputs, slower)"
    )
    parser.set_defaults(handler=run)

"""`hat-basicsr export MODEL OUT.onnx`: a HAT as one float32 ONNX file for onnxruntime, chaiNNer,
vs-mlrt or TensorRT.

MODEL is a checkpoint or an option file, as for `upscale`. The graph (ONNX opset 18) takes
float32 NCHW images in [0, 1] (RGB, or the model's single channel) and returns the upscaled
images; batch, height and width are dynamic, and it pads to the window and crops back inside, so
one file serves every input size from 1x1 up. `--static H W` fixes height and width (batch stays
dynamic), for runtimes that want fixed shapes. Before writing, the file is run in onnxruntime
against the torch model at a size the export did not trace (`--no-verify` skips it). float16 is
refused: HAT's activations overflow it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hat_basicsr.cli.arguments import add_subcommand
from hat_basicsr.errors import OutputError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_subcommand(subparsers, 'export', 'export a HAT model to ONNX', __doc__)
    parser.add_argument('model', help='checkpoint (.pth/.safetensors) or BasicSR option file (.yml)')
    parser.add_argument('output', type=Path, help='the .onnx file to write')
    parser.add_argument(
        '--param-key', default='auto', help='checkpoint entry to load (default: params_ema, then params)'
    )
    parser.add_argument(
        '--static', type=int, nargs=2, metavar=('H', 'W'), help='fix the input height and width (default: dynamic)'
    )
    parser.add_argument(
        '--dtype',
        choices=('float32', 'float16'),
        default='float32',
        help='precision of the graph; float16 is refused (HAT overflows it)',
    )
    parser.add_argument(
        '--no-verify', action='store_true', help='skip running the file in onnxruntime against the torch model'
    )
    parser.add_argument('--force', action='store_true', help='overwrite OUTPUT')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hat_basicsr.cli.model_source import instantiate, resolve_source
    from hat_basicsr.utils.onnx_deploy import OPSET, VERIFY_TOLERANCE, export_onnx, refuse_float16

    refuse_float16(args.dtype)
    if args.output.suffix.lower() != '.onnx':
        raise OutputError(f'{args.output}: the output file must end in .onnx')
    if args.output.exists() and not args.force:
        raise OutputError(f'{args.output} exists (use --force to overwrite)')
    spec = resolve_source(args.model, args.param_key)
    model = instantiate(spec, args.model, 'cpu')
    static = tuple(args.static) if args.static else None
    diff = export_onnx(model, args.output, spec.scale, static, None if args.no_verify else VERIFY_TOLERANCE)
    shapes = f'{static[0]}x{static[1]}' if static else 'dynamic height and width'
    check = 'not verified' if args.no_verify else f'onnxruntime vs torch max abs diff {diff:.2g}'
    print(f'{args.output}: ONNX opset {OPSET}, float32, x{spec.scale}, dynamic batch, {shapes} ({check})')
    return 0

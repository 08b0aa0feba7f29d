"""`hat-basicsr lam`: Local Attribution Map and Diffusion Index of an SR model for one output patch.

The box is given in OUTPUT (SR) pixels: --box X Y is the top-left corner of a --size x --size
patch of the super-resolved image (as in the LAM paper); the panel draws it on the input at
box / scale. The model is a HAT checkpoint (options read from its weights) or a BasicSR option
file for any registered architecture (EDSR, RCAN, SwinIR, HAT, ...); an option file without
weights studies the randomly initialised network. Prints the Diffusion Index and writes a PNG
panel: input with the box, LAM heatmap over the input, and the SR patch.
"""

from __future__ import annotations

import argparse

from hat_basicsr.cli.arguments import add_model_arguments, add_subcommand, positive
from hat_basicsr.utils.defaults import DEFAULT_BOX_SIZE, DEFAULT_SIGMA, DEFAULT_STEPS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_subcommand(subparsers, 'lam', 'Local Attribution Map and Diffusion Index of an SR model', __doc__)
    add_model_arguments(parser)
    parser.add_argument(
        '--box',
        type=int,
        nargs=2,
        metavar=('X', 'Y'),
        required=True,
        help='top-left corner of the target patch, in SR-output pixels',
    )
    parser.add_argument(
        '--size',
        type=positive(int),
        default=DEFAULT_BOX_SIZE,
        help=f'side of the target patch in SR pixels (default {DEFAULT_BOX_SIZE})',
    )
    parser.add_argument(
        '--steps', type=positive(int), default=DEFAULT_STEPS, help=f'path-integration steps (default {DEFAULT_STEPS})'
    )
    parser.add_argument(
        '--sigma',
        type=positive(float),
        default=DEFAULT_SIGMA,
        help=f'Gaussian sigma of the baseline blur, in input pixels (default {DEFAULT_SIGMA})',
    )
    parser.add_argument(
        '--batch',
        type=positive(int),
        default=8,
        help='path points per forward/backward pass: bounds memory (default 8)',
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hat_basicsr.analysis.lam import Box, check_box, local_attribution_map, save_lam_panel
    from hat_basicsr.cli.analysis_inputs import load_inputs

    model, scale, image, device = load_inputs(args)
    box = Box(*args.box, args.size)
    check_box(box, image.shape[-2] * scale, image.shape[-1] * scale)
    result = local_attribution_map(
        model, image, box, sigma=args.sigma, steps=args.steps, batch=args.batch, device=device
    )
    path = save_lam_panel(result, args.output)
    gap = result.attribution.completeness_gap
    print(
        f'DI {result.diffusion_index:.2f}  (box x={box.x} y={box.y} size={box.size} in SR pixels, x{scale}; '
        f'completeness gap {gap:.2%})'
    )
    print(f'wrote {path}')
    return 0

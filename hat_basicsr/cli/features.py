"""`hat-basicsr features`: the feature map after every stage of an SR model, as a labelled PNG grid.

Stages are HAT's RHAGs and SwinIR's RSTBs (`layers`), EDSR's and RCAN's blocks (`body`), or else the
model's top-level modules. Each tile shows the mean |feature| per position, or with --channels the
chosen channels (one row each). Window-attention networks show blocking artifacts in this view.
"""

from __future__ import annotations

import argparse

from hat_basicsr.cli.arguments import add_model_arguments, add_subcommand, non_negative, positive, report_error


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_subcommand(subparsers, 'features', 'per-stage feature maps of an SR model as a PNG grid', __doc__)
    add_model_arguments(parser)
    parser.add_argument(
        '--channels',
        type=non_negative(int),
        nargs='+',
        metavar='C',
        help='channels to show (default: mean magnitude over all channels)',
    )
    parser.add_argument('--columns', type=positive(int), default=6, help='stages per row of the grid (default 6)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hat_basicsr.analysis.features import capture_stage_features, save_feature_grid
    from hat_basicsr.cli.analysis_inputs import load_inputs

    model, _, image, device = load_inputs(args)
    stages = capture_stage_features(model, image, device)
    try:
        path = save_feature_grid(stages, args.output, args.channels, args.columns)
    except IndexError as error:
        return report_error('features', error)
    print('stages: ' + ', '.join(name for name, _ in stages))
    print(f'wrote {path}')
    return 0

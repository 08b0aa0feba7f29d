"""`hat-basicsr plan -opt X.yml [--nproc N] [--json]`: what a training will do and need, before it runs.

Launcher and world size, batch per rank and in total, iterations, samples and epochs over the
training set, validations and saves, bytes per save (network + EMA + Adam state) and on disk with
`logger.keep_checkpoints`, free space where experiments/ lives (a warning when it will not fit),
parameters and a rough memory estimate per rank (see hat_basicsr.training_plan for the formulas).
Nothing is trained, written or loaded onto a device; the network is built on the meta device.
The option file is checked as training checks it. Every training log starts with the same block.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from hat_basicsr.cli.arguments import add_subcommand, positive, report_error


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_subcommand(subparsers, 'plan', 'what a training will do and need, before it runs', __doc__)
    parser.add_argument('-opt', dest='options', required=True, help='BasicSR training option file (.yml)')
    parser.add_argument(
        '--nproc',
        type=positive(int),
        default=None,
        help="training processes in total (torchrun's nnodes x nproc_per_node; default: the option "
        "file's num_gpu when above 1, else 1)",
    )
    parser.add_argument('--json', action='store_true', help='print one JSON object instead of text')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hat_basicsr.errors import OptionFileError
    from hat_basicsr.option_check import check_data, check_options, launch_error
    from hat_basicsr.training_plan import format_plan, make_plan
    from hat_basicsr.utils.option_spec import is_int
    from hat_basicsr.utils.option_yaml import read_option_yaml

    try:
        opt = read_option_yaml(args.options)
        warnings = check_options(opt, args.options, is_train=True)
        check_data(opt, args.options)
        num_gpu = opt['num_gpu']
        if num_gpu == 'auto':
            import torch

            num_gpu = torch.cuda.device_count()
        world_size = args.nproc or (num_gpu if is_int(num_gpu) and num_gpu > 1 else 1)
        refusal = launch_error(opt['num_gpu'], world_size, args.options)
        if refusal:
            raise OptionFileError(refusal)
        plan = make_plan(opt, world_size, os.path.join(os.getcwd(), 'experiments'), num_gpu)
    except OSError as error:
        return report_error('plan', error)
    for warning in warnings:
        print(f'hat-basicsr plan: warning: {warning}', file=sys.stderr)
    if args.json:
        print(json.dumps(plan.as_dict()))
    else:
        print('\n'.join(format_plan(plan)))
    return 0

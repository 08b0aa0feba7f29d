"""`hat-basicsr info SOURCE [--size H W]`: parameters and multiply-adds of a model, per module.

SOURCE is a checkpoint (a HAT; options read from the weights) or a BasicSR option file (any
registered architecture; no weights are loaded). The network is built on the meta device, so
even HAT-L costs no memory. See hat_basicsr.archs.hat_complexity (HAT) and hat_basicsr.utils.complexity
(others) for what is counted.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Tuple

from hat_basicsr.cli.arguments import add_subcommand
from hat_basicsr.errors import SourceError

if TYPE_CHECKING:
    from hat_basicsr.utils.complexity import Complexity


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_subcommand(subparsers, 'info', 'parameters and multiply-adds of a model', __doc__)
    parser.add_argument('source', type=Path, help='checkpoint (.pth/.safetensors) or BasicSR option file (.yml)')
    parser.add_argument(
        '--size',
        type=int,
        nargs=2,
        default=(64, 64),
        metavar=('H', 'W'),
        help='input size in pixels (default: 64 64, as in the HAT paper)',
    )
    parser.add_argument('--param-key', default='auto', help='checkpoint entry to read')
    parser.set_defaults(func=run)


def source_complexity(source: Path, size: Tuple[int, int], param_key: str = 'auto') -> Complexity:
    import torch

    from hat_basicsr.archs.hat_complexity import hat_complexity
    from hat_basicsr.cli.model_source import build_network, resolve_source
    from hat_basicsr.utils.complexity import measured_complexity

    spec = resolve_source(source, param_key)
    with torch.device('meta'):
        model = build_network(spec.network)
    if spec.network['type'] == 'HAT':
        return hat_complexity(model, spec.network, size)
    in_chans = spec.network.get('in_chans', spec.network.get('num_in_ch', 3))
    try:
        return measured_complexity(model, in_chans, size)
    except Exception as error:  # an architecture that cannot run on the meta device
        raise SourceError(f'cannot count {spec.network["type"]} at {size}: {type(error).__name__}: {error}') from error


def format_report(report: Complexity) -> str:
    width = max(len(row.name) for row in report.rows)
    unit, divisor = ('G', 1e9) if report.macs >= 1e9 else ('M', 1e6)
    processed = (
        ''
        if report.processed_size == report.size
        else f' (processed as {report.processed_size[0]}x{report.processed_size[1]} after padding to the window)'
    )
    lines = [
        f'input {report.size[0]}x{report.size[1]}{processed}',
        f'{"module":<{width}}  {"params":>12}  {f"MACs ({unit})":>10}  {"share":>6}',
    ]
    for row in report.rows:
        share = row.macs / report.macs if report.macs else 0.0
        lines.append(f'{row.name:<{width}}  {row.params:>12,}  {row.macs / divisor:>10.3f}  {share:>6.1%}')
    lines.append(f'{"total":<{width}}  {report.params:>12,}  {report.macs / divisor:>10.3f}')
    lines.append(
        "MACs: multiply-adds of convolutions, linear layers and attention matrix products (the HAT paper's Multi-Adds)"
    )
    return '\n'.join(lines)


def run(args: argparse.Namespace) -> int:
    if min(args.size) < 1:
        raise SourceError(f'--size must be positive, got {args.size}')
    report = source_complexity(args.source, tuple(args.size), args.param_key)
    print(format_report(report))
    return 0

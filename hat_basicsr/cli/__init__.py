"""The `hat-basicsr` console script: one subcommand per module in this package."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

SUBCOMMANDS = ('upscale', 'convert', 'export', 'info', 'lam', 'features', 'plan')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='hat-basicsr', description='HAT super-resolution tools')
    subparsers = parser.add_subparsers(dest='command', required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f'hat_basicsr.cli.{name}').add_parser(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())

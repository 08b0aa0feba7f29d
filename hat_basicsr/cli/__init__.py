"""The `hat-basicsr` console script: one subcommand per module in this package.

The parser is built and the arguments parsed before torch, BasicSR or onnx load (the package is
imported without them in this process, see hat_basicsr/__init__.py), so --help and argument errors
answer at once: a subcommand module imports at its top only the standard library and the light
modules that tests/test_code_style.py lists (errors, cli.arguments, utils.defaults, utils.files;
names needed only in annotations go under `if TYPE_CHECKING:`), and everything else inside the
functions that run the command. A subcommand raises hat_basicsr.errors.UserError for what the
user is to change; main reports it in one line (exit status 2), and anything else keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

import hat_basicsr
from hat_basicsr.cli.arguments import report_error
from hat_basicsr.errors import UserError

SUBCOMMANDS = ('upscale', 'convert', 'export', 'info', 'lam', 'features', 'plan', 'schema')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='hat-basicsr', description='HAT super-resolution tools')
    subparsers = parser.add_subparsers(dest='command', required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f'hat_basicsr.cli.{name}').add_parser(subparsers)
    return parser


def run_subcommand(args: argparse.Namespace) -> int:
    """The parsed subcommand's exit status; a UserError it raises is reported in one line."""
    try:
        return args.func(args)
    except UserError as error:
        return report_error(args.command, error)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    hat_basicsr.load()
    return run_subcommand(args)


if __name__ == '__main__':
    sys.exit(main())

"""Argument types, the analysis subcommands' model arguments and the one-line error report that the
subcommands share; light, as the parsers are built before torch loads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional, TypeVar

Number = TypeVar('Number', int, float)


def add_subcommand(
    subparsers: argparse._SubParsersAction, name: str, summary: str, doc: Optional[str]
) -> argparse.ArgumentParser:
    """A subcommand whose --help shows its module docstring with the line breaks it was written with."""
    return subparsers.add_parser(
        name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Image, model and device arguments shared by the analysis subcommands."""
    parser.add_argument('image', type=Path, help='input (low-resolution) image')
    parser.add_argument(
        '-m',
        '--model',
        required=True,
        help='HAT checkpoint (.pth/.safetensors) or BasicSR option file (.yml) of any architecture',
    )
    parser.add_argument('-o', '--output', type=Path, required=True, help='PNG file to write')
    parser.add_argument('--device', default='auto', help="'auto' (CUDA if available), 'cpu', 'cuda:1', ...")


def report_error(command: str, error: BaseException) -> int:
    """One line on stderr instead of a traceback; the exit status for a failed subcommand."""
    print(f'hat-basicsr {command}: error: {error}', file=sys.stderr)
    return 2


def checked(
    cast: Callable[[str], Number], valid: Callable[[Number], bool], requirement: str
) -> Callable[[str], Number]:
    """An argparse type: `cast`, then refuse values that are not `valid` (argparse reports it, status 2)."""

    def parse(text: str) -> Number:
        value = cast(text)
        if not valid(value):
            raise argparse.ArgumentTypeError(f'{requirement}, got {text}')
        return value

    parse.__name__ = cast.__name__  # argparse names the type in its "invalid int value" message
    return parse


def positive(cast: Callable[[str], Number]) -> Callable[[str], Number]:
    return checked(cast, lambda value: value > 0, 'must be positive')


def non_negative(cast: Callable[[str], Number]) -> Callable[[str], Number]:
    return checked(cast, lambda value: value >= 0, 'must be >= 0')

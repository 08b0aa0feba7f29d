"""Which program this process is: one of hat_basicsr's entry points, or a program that imports it.

hat_basicsr/__init__.py runs before any entry module's own code (`python -m hat_basicsr.train`
imports the package first, and so does the `hat-basicsr` script), so it is the only place that can
act before torch loads; it asks here whether the process is an entry point. Standard library only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Tuple

PACKAGE = Path(__file__).resolve().parent
CONSOLE_SCRIPT = 'hat-basicsr'
# The `hat-basicsr` script parses its arguments before hat_basicsr loads torch and BasicSR.
LOADS_AFTER_PARSING = (CONSOLE_SCRIPT,)
# Interpreter options that take a value as the next argument.
OPTIONS_WITH_VALUE = ('-W', '-X', '-Q')


def _main_program(argv: List[str]) -> Tuple[str, Optional[str]]:
    """('module', NAME) for `python [options] -m NAME ...`, ('script', PATH) for a script (a console
    script included), ('code', None) for -c, - or the REPL."""
    arguments = iter(argv[1:])
    for argument in arguments:
        if argument == '-m':
            return 'module', next(arguments, None)
        if argument.startswith('-m'):
            return 'module', argument[2:]
        if argument in OPTIONS_WITH_VALUE:
            next(arguments, None)
        elif argument == '-c' or argument.startswith('-c') or argument == '-':
            return 'code', None
        elif not argument.startswith('-'):
            return 'script', argument
    return 'code', None


def entry_point(argv: Optional[List[str]] = None) -> Optional[str]:
    """'hat-basicsr', 'hat_basicsr.train', ... or 'benchmarks/NAME.py' when this process was started
    as one of hat_basicsr's programs; None for any other program. `argv`: default sys.orig_argv."""
    kind, name = _main_program(list(getattr(sys, 'orig_argv', sys.argv)) if argv is None else argv)
    if kind == 'module':
        return name if name and name.split('.')[0] == PACKAGE.name else None
    if kind == 'code':
        return None
    if Path(name).name.removesuffix('.exe').removesuffix('-script.py') == CONSOLE_SCRIPT:
        return CONSOLE_SCRIPT
    path = Path(name).resolve()
    if path.suffix == '.py' and path.is_relative_to(PACKAGE):
        return '.'.join(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    if path.suffix == '.py' and path.parent == PACKAGE.parent / 'benchmarks':
        return f'benchmarks/{path.name}'
    return None

"""Which program this process is: one of hat_basicsr's entry points, or a program that imports it.

hat_basicsr/__init__.py runs before any entry module's own code (`python -m hat_basicsr.train`
imports the package first, and so does the `hat-basicsr` script), so it is the only place that can
act before torch loads; it asks here whether the process is an entry point. Standard library only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

PACKAGE = Path(__file__).resolve().parent
CONSOLE_SCRIPT = 'hat-basicsr'
# The `hat-basicsr` script parses its arguments before hat_basicsr loads torch and BasicSR.
LOADS_AFTER_PARSING = (CONSOLE_SCRIPT, 'hat_basicsr.cli')
# Interpreter options that take a value as the next argument.
OPTIONS_WITH_VALUE = ('-W', '-X', '-Q')


def _main_module(argv: List[str]) -> Optional[str]:
    """The module of `python [options] -m MODULE ...`; None for a script, -c or the REPL."""
    arguments = iter(argv[1:])
    for argument in arguments:
        if argument == '-m':
            return next(arguments, None)
        if argument.startswith('-m'):
            return argument[2:]
        if argument in OPTIONS_WITH_VALUE:
            next(arguments, None)
        elif argument == '-c' or not argument.startswith('-'):
            return None
    return None


def entry_point(argv: Optional[List[str]] = None, script: Optional[str] = None) -> Optional[str]:
    """'hat-basicsr', 'hat_basicsr.train', ... or 'benchmarks/NAME.py' when this process was started
    as one of hat_basicsr's programs; None for any other program. Defaults: sys.orig_argv, sys.argv[0]."""
    argv = list(getattr(sys, 'orig_argv', sys.argv)) if argv is None else argv
    script = (sys.argv[0] if sys.argv else '') if script is None else script
    module = _main_module(argv)
    if module is not None:
        return module if module.split('.')[0] == PACKAGE.name else None
    name = Path(script).name.removesuffix('.exe').removesuffix('-script.py')
    if name == CONSOLE_SCRIPT:
        return CONSOLE_SCRIPT
    if not script.endswith('.py'):
        return None
    path = Path(script).resolve()
    if path.is_relative_to(PACKAGE):
        return '.'.join(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    if path.parent == PACKAGE.parent / 'benchmarks':
        return f'benchmarks/{path.name}'
    return None

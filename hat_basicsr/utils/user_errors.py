"""Which exceptions the train/test entry points report in one line instead of a traceback: the
user's to fix (options, data, checkpoints, output folders), never the project's own bugs.

Bad options are refused up front (hat_basicsr.option_check), so what is recognised here is
narrow: this project's own errors (hat_basicsr.errors.UserError; an image BasicSR's datasets cannot
decode and a refusal of BasicSR's checks of dataset folders and crops are ones, raised where they
happen: see basicsr_compat._fix_imfrombytes and _fix_data_check), invalid YAML and a file missing by
name. Anything else keeps its traceback; set HAT_BASICSR_TRACEBACK=1 to get it for these too.
"""

from __future__ import annotations

import re
from typing import Optional

import yaml

from hat_basicsr.errors import UserError


def _worker_message(error: BaseException) -> str:
    """The message without the worker traceback that DataLoader puts into re-raised exceptions."""
    message = str(error)
    if 'Original Traceback' in message:
        # The traceback's last line names the class, qualified by its module unless a builtin.
        name = re.escape(type(error).__qualname__)
        message = re.sub(rf'^({re.escape(type(error).__module__)}\.)?{name}: ', '', message.strip().splitlines()[-1])
    return message


def user_error_message(error: BaseException) -> Optional[str]:
    """One line for an error of the options, data, checkpoints or output folders; None for
    anything else, which keeps its traceback."""
    missing_file = isinstance(error, FileNotFoundError) and error.filename is not None
    if isinstance(error, (UserError, yaml.YAMLError)) or missing_file:
        return f'{type(error).__name__}: {_worker_message(error)}'
    return None

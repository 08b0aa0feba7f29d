"""Which exceptions the train/test entry points report in one line instead of a traceback: the
user's to fix (options, data, checkpoints, output folders), never the project's own bugs.

Bad options are refused up front (hat_basicsr.option_check), so what is recognised here is
narrow: this project's own errors (hat_basicsr.errors.UserError; an image BasicSR's datasets cannot
decode is one, raised where it is read: see basicsr_compat._fix_imfrombytes), invalid YAML, a file
missing by name, and BasicSR's own checks of dataset folders and crops, recognised by where they are
raised. Anything else keeps its traceback; set HAT_BASICSR_TRACEBACK=1 to get it for these too.
"""

from __future__ import annotations

import re
import traceback
from types import FrameType
from typing import List, Optional

import yaml

from hat_basicsr.errors import UserError

# BasicSR's own checks of dataset folders, list files and crop sizes: (module, function) -> the
# exception types they raise with a message naming the folders, files or sizes.
BASICSR_DATA_CHECKS = {
    ('basicsr.data.data_util', 'paired_paths_from_lmdb'): (AssertionError, ValueError),
    ('basicsr.data.data_util', 'paired_paths_from_meta_info_file'): (AssertionError,),
    ('basicsr.data.data_util', 'paired_paths_from_folder'): (AssertionError,),
    ('basicsr.data.data_util', 'paths_from_lmdb'): (ValueError,),
    ('basicsr.data.transforms', 'paired_random_crop'): (ValueError,),
}
WORKER_FRAME = re.compile(r'File "[^"]*", line \d+, in (\w+)')


def _frames(error: BaseException) -> List[FrameType]:
    return [frame for frame, _ in traceback.walk_tb(error.__traceback__)]


def _function(frame: FrameType) -> tuple:
    return frame.f_globals.get('__name__'), frame.f_code.co_name


def _worker_functions(error: BaseException) -> List[str]:
    """Functions of the traceback a DataLoader worker put into the text of a re-raised exception."""
    text = str(error)
    return WORKER_FRAME.findall(text.split('Original Traceback', 1)[1]) if 'Original Traceback' in text else []


def _worker_message(error: BaseException) -> str:
    """The message without the worker traceback that DataLoader puts into re-raised exceptions."""
    message = str(error)
    if 'Original Traceback' in message:
        # The traceback's last line names the class, qualified by its module unless a builtin.
        name = re.escape(type(error).__qualname__)
        message = re.sub(rf'^({re.escape(type(error).__module__)}\.)?{name}: ', '', message.strip().splitlines()[-1])
    return message


def basicsr_data_check(error: BaseException) -> bool:
    """An error raised by one of BasicSR's checks of dataset folders and crops (BASICSR_DATA_CHECKS)."""
    frames = _frames(error)
    worker = _worker_functions(error)
    if frames and _function(frames[-1]) in BASICSR_DATA_CHECKS:
        return isinstance(error, BASICSR_DATA_CHECKS[_function(frames[-1])])
    return bool(worker) and any(
        isinstance(error, types) and worker[-1] == function for (_, function), types in BASICSR_DATA_CHECKS.items()
    )


def user_error_message(error: BaseException) -> Optional[str]:
    """One line for an error of the options, data, checkpoints or output folders; None for
    anything else, which keeps its traceback."""
    missing_file = isinstance(error, FileNotFoundError) and error.filename is not None
    if isinstance(error, (UserError, yaml.YAMLError)) or missing_file or basicsr_data_check(error):
        return f'{type(error).__name__}: {_worker_message(error)}'
    return None

"""Which exceptions the train/test entry points report in one line instead of a traceback: the
user's to fix (options, data, checkpoints, output folders), never the project's own bugs.

Bad options are refused up front (hat_basicsr.option_check), so what is recognised here is
narrow: this project's own errors (hat_basicsr.errors.UserError), invalid YAML, a file missing by name, and a few errors
recognised by where they are raised (an image BasicSR cannot decode, BasicSR's own checks of
dataset folders and crops). Anything else keeps its traceback; set HAT_BASICSR_TRACEBACK=1 to get
it for these too.
"""

from __future__ import annotations

import re
import traceback
from types import FrameType
from typing import List, Optional

import cv2
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
# What imfrombytes raises for: a file OpenCV cannot decode (None.astype), an empty one (cv2's
# `!buf.empty()` assertion) and a key an LMDB does not hold (np.frombuffer(None)).
IMAGE_DECODING_ERRORS = (AttributeError, cv2.error, TypeError)
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
        message = message.strip().splitlines()[-1].removeprefix(f'{type(error).__name__}: ')
    return message


def undecodable_image(error: BaseException) -> Optional[str]:
    """What to say when BasicSR's `imfrombytes` (the innermost frame: the error is raised by
    numpy or OpenCV on what it was given) got bytes it cannot decode, an empty file or the None of
    a missing LMDB key, else None. In this process the dataset's `*_path` variables say which file
    it was reading; from a DataLoader worker only the text is left."""
    if not isinstance(error, IMAGE_DECODING_ERRORS):
        return None
    frames = _frames(error)
    worker = _worker_functions(error)
    in_process = bool(frames) and _function(frames[-1]) == ('basicsr.utils.img_util', 'imfrombytes')
    if not in_process and not (worker and worker[-1] == 'imfrombytes'):
        return None
    problem = 'cannot decode an image of the dataset (truncated or corrupt file, or not an image)'
    if in_process:
        content = frames[-1].f_locals.get('content', b'?')
        if content is None:
            problem = 'an LMDB of the dataset has no such key (check its meta_info.txt)'
        elif len(content) == 0:
            problem = 'cannot decode an image of the dataset: the file is empty'
    for frame in reversed(frames):
        paths = {
            name: value for name, value in frame.f_locals.items() if name.endswith('_path') and isinstance(value, str)
        }
        if frame.f_code.co_name == '__getitem__' and paths:
            return f'{problem}; it was reading ' + ', '.join(f'{name} {value}' for name, value in paths.items())
    return f'{problem}; a DataLoader worker does not say which: set num_worker_per_gpu: 0 to have it named'


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
    undecodable = undecodable_image(error)
    if undecodable:
        return undecodable
    missing_file = isinstance(error, FileNotFoundError) and error.filename is not None
    if isinstance(error, (UserError, yaml.YAMLError)) or missing_file or basicsr_data_check(error):
        return f'{type(error).__name__}: {_worker_message(error)}'
    return None

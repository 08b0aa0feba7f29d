"""Which exceptions from inside BasicSR are the user's to fix (options, data, checkpoints), and the
one line the train/test entry points print for them instead of a traceback."""
from __future__ import annotations

import traceback
from typing import Optional

import yaml

from hat_basicsr.data.imagenet_paired_dataset import CorruptImageError

# What bad options, data or checkpoints raise from inside BasicSR (a string where a number belongs:
# TypeError; a missing file in a dataset: AssertionError; ...). Reported in one line; set
# HAT_BASICSR_TRACEBACK=1 to get the traceback instead.
USER_ERRORS = (ValueError, KeyError, TypeError, AssertionError, ZeroDivisionError, OSError, yaml.YAMLError,
               CorruptImageError)


def undecodable_image(error: BaseException) -> Optional[str]:
    """What to say when BasicSR's `imfrombytes` met a file OpenCV cannot decode (it hands the None it
    got to `.astype`, an AttributeError that names no file), else None. In this process the dataset's
    `*_path` variables say which file it was reading; from a DataLoader worker only the text is left."""
    if not isinstance(error, AttributeError) or "'NoneType' object has no attribute 'astype'" not in str(error):
        return None
    frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)]
    if not any(frame.f_code.co_name == 'imfrombytes' for frame in frames) and 'imfrombytes' not in str(error):
        return None
    problem = 'cannot decode an image of the dataset (truncated or corrupt file, or not an image)'
    for frame in reversed(frames):
        paths = {name: value for name, value in frame.f_locals.items()
                 if name.endswith('_path') and isinstance(value, str)}
        if frame.f_code.co_name == '__getitem__' and paths:
            return f'{problem}; it was reading ' + ', '.join(f'{name} {value}' for name, value in paths.items())
    return f'{problem}; a DataLoader worker does not say which: set num_worker_per_gpu: 0 to have it named'


def user_error_message(error: BaseException) -> Optional[str]:
    """One line for an error of the options, data or checkpoints (without the worker traceback that
    DataLoader puts into re-raised exceptions); None for anything else, which keeps its traceback."""
    undecodable = undecodable_image(error)
    if undecodable:
        return undecodable
    if not isinstance(error, USER_ERRORS):
        return None
    message = str(error)
    if 'Original Traceback' in message:
        message = message.strip().splitlines()[-1].removeprefix(f'{type(error).__name__}: ')
    return f'{type(error).__name__}: {message}'

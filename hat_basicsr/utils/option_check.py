"""Checks of an option file for what BasicSR would silently misread, run before BasicSR acts on it.

BasicSR turns every `path:` entry it does not know into a folder (a misspelled
`pretrained_network_g` trains from scratch and creates a folder named like the weights file),
ignores misspelled `train:` entries (`ema_decy` turns EMA off), and YAML 1.1 reads `2e-4`
(no dot) as a string, which fails deep inside the optimizer or scheduler.
"""
from __future__ import annotations

import difflib
import re
import sys
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple

import yaml

# Entries of `path:` that BasicSR reads (basicsr/utils/options.py, misc.py, models/base_model.py).
PATH_KEYS = ('experiments_root', 'results_root', 'models', 'training_states', 'log', 'visualization',
             'resume_state', 'ignore_resume_networks')
PATH_NETWORK_KEY = re.compile(r'^(pretrain_network|strict_load|param_key)_\w+$')
# Entries of `train:` read by BasicSR's models and train.py, and by this package's models.
TRAIN_KEYS = ('total_iter', 'warmup_iter', 'ema_decay', 'optim_g', 'optim_d', 'scheduler', 'pixel_opt',
              'perceptual_opt', 'gan_opt', 'ldl_opt', 'feature_matching_opt', 'net_d_iters', 'net_d_init_iters',
              'net_d_reg_every', 'net_g_reg_every', 'mixing_prob', 'path_batch_shrink', 'path_reg_weight',
              'dcn_lr_mul', 'flow_lr_mul', 'fix_flow', 'lr_flow', 'tsa_iter')
# What YAML 1.1 leaves a string although it reads as a number: an exponent without a dot (2e-4).
DOTLESS_EXPONENT = re.compile(r'^[+-]?\d+[eE][+-]?\d+$')


class OptionFileError(ValueError):
    """An option file entry that BasicSR would misread."""


def _entries(node: Any, prefix: str = '') -> Iterator[Tuple[str, Any]]:
    """(dotted key, value) for every leaf of a nested option tree."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _entries(value, f'{prefix}{key}.')
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _entries(value, f'{prefix}{index}.')
    else:
        yield prefix[:-1], node


def _suggestion(key: str, known: Tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    return f' (did you mean {close[0]!r}?)' if close else ''


def check_options(opt: Mapping, source: str, is_train: bool) -> List[str]:
    """Raise OptionFileError for entries BasicSR would misread; return warnings for unknown `train:`
    entries (a custom model may read them, so they are not refused)."""
    for key, value in _entries(opt):
        if isinstance(value, str) and DOTLESS_EXPONENT.match(value.strip()):
            raise OptionFileError(f'{source}: {key}: {value!r} is read as a string by YAML; write it with a dot '
                                  f'(e.g. {value.lower().replace("e", ".0e", 1)})')
    paths = opt.get('path') or {}
    known_paths = PATH_KEYS + ('pretrain_network_g', 'strict_load_g', 'param_key_g')
    for key in paths:
        if key not in PATH_KEYS and not PATH_NETWORK_KEY.match(str(key)):
            raise OptionFileError(f'{source}: unknown entry path.{key}{_suggestion(str(key), known_paths)}; BasicSR '
                                  'would create a folder named after its value')
    if not is_train and 'network_g' in opt and not paths.get('pretrain_network_g'):
        raise OptionFileError(f'{source}: path.pretrain_network_g is not set: testing would score a randomly '
                              'initialised network')
    train = (opt.get('train') or {}) if is_train else {}
    return [f'{source}: train.{key} is not read by BasicSR or hat_basicsr{_suggestion(str(key), TRAIN_KEYS)}; '
            'it has no effect unless a custom model reads it' for key in train if key not in TRAIN_KEYS]


def option_file_argument(args: Sequence[str]) -> Optional[str]:
    """The value of BasicSR's -opt argument, if given."""
    for index, arg in enumerate(args):
        if arg == '-opt' and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith('-opt='):
            return arg.split('=', 1)[1]
    return None


def precheck_option_file(args: Sequence[str], prog: str, is_train: bool) -> None:
    """check_options on the -opt file (an unreadable file is left to BasicSR to report)."""
    from basicsr.utils.options import ordered_yaml
    path = option_file_argument(args)
    try:
        with open(path, encoding='utf-8') as stream:
            opt = yaml.load(stream, Loader=ordered_yaml()[0])
    except (TypeError, OSError, yaml.YAMLError):
        return
    if isinstance(opt, dict):
        for warning in check_options(opt, path, is_train):
            print(f'{prog}: warning: {warning}', file=sys.stderr)

"""Reading and writing HAT weights in every form users hold them, safely.

Accepted: BasicSR checkpoints (`params_ema` / `params`), bare state dicts, DDP (`module.`) and
torch.compile (`_orig_mod.`) prefixes, and safetensors files. Pickles are read with
`weights_only=True`, so a downloaded checkpoint cannot run code.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Dict, Mapping, Optional, Protocol, Tuple, Union, runtime_checkable

import torch
from torch import Tensor, nn

from hat_basicsr.errors import CheckpointError, CheckpointMismatchError
from hat_basicsr.utils.files import atomic_write

PARAM_KEYS = ('params_ema', 'params', 'state_dict')
WRAPPER_PREFIXES = ('module.', '_orig_mod.')
SAFETENSORS_SUFFIXES = ('.safetensors', '.sft')
MAX_LISTED = 12

Source = Union[str, os.PathLike, Mapping]
logger = logging.getLogger('basicsr')


@runtime_checkable
class DerivedState(Protocol):
    """A model whose state dict holds entries it computes from its hyperparameters alone
    (hat_basicsr.archs.hat_export answers it for HAT); a model without it has none."""

    def derived_state_keys(self) -> Tuple[str, ...]:
        """The entries a checkpoint may lack: the model's own values are kept for them."""


def read_checkpoint(source: Source) -> Mapping:
    """Load a checkpoint file (or pass a loaded mapping through) without executing code."""
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    if path.stat().st_size == 0:
        raise CheckpointError(f'checkpoint {path} is empty (0 bytes)')
    try:
        if is_safetensors(path):
            from safetensors.torch import load_file

            return load_file(str(path), device='cpu')
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        blocked = re.search(r'GLOBAL (\S+)', str(error), flags=re.IGNORECASE)
        if blocked is None:
            raise CheckpointError(
                f'cannot read checkpoint {path}: not a PyTorch or safetensors weights file (corrupt or truncated?)'
            ) from error
        raise CheckpointError(
            f'{path} holds objects other than tensors and plain values ({blocked.group(1)}); '
            'it is refused because loading it could run code'
        ) from error
    except Exception as error:
        raise CheckpointError(f'cannot read checkpoint {path}: {type(error).__name__}: {error}') from error


def is_safetensors(path: Union[str, os.PathLike]) -> bool:
    return Path(path).suffix.lower() in SAFETENSORS_SUFFIXES


def strip_wrapper_prefixes(key: str) -> str:
    """'module._orig_mod.conv_first.weight' -> 'conv_first.weight'."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def extract_state_dict(checkpoint: Mapping, param_key: Optional[str] = 'auto') -> Dict[str, Tensor]:
    """Pick the weights out of a checkpoint: `param_key`, or with 'auto' the first of
    params_ema / params / state_dict present, or the mapping itself when it is a flat state dict."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f'checkpoint holds a {type(checkpoint).__name__}, not a state dict or a BasicSR checkpoint'
        )
    if param_key in (None, '', 'auto'):
        nested = [key for key in PARAM_KEYS if isinstance(checkpoint.get(key), Mapping)]
        state = checkpoint[nested[0]] if nested else checkpoint
    elif param_key in checkpoint:
        state = checkpoint[param_key]
    else:
        raise CheckpointError(f"checkpoint has no '{param_key}' entry; it has: {sorted(checkpoint)[:MAX_LISTED]}")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint entry '{param_key}' holds a {type(state).__name__}, not a state dict")
    not_tensors = [key for key, value in state.items() if not isinstance(value, Tensor)]
    if not state or not_tensors:
        raise CheckpointError(
            'checkpoint holds no state dict (entries that are not tensors: '
            f'{not_tensors[:MAX_LISTED]}; top-level keys: {sorted(checkpoint)[:MAX_LISTED]})'
        )
    non_finite = next(
        (key for key, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()), None
    )
    if non_finite is not None:
        raise CheckpointError(
            f'tensor {non_finite} holds NaN or infinite values (weights of a diverged '
            'training or a damaged file); they would give NaN or black images'
        )
    return {strip_wrapper_prefixes(key): value for key, value in state.items()}


def read_state_dict(source: Source, param_key: Optional[str] = 'auto') -> Dict[str, Tensor]:
    """extract_state_dict of a file or a mapping; a file's problems are reported with its name."""
    checkpoint = read_checkpoint(source)
    try:
        return extract_state_dict(checkpoint, param_key)
    except CheckpointError as error:
        if isinstance(source, Mapping):
            raise
        raise CheckpointError(f'{source}: {error}') from error


def _listing(title: str, items: list) -> str:
    more = f' ... (+{len(items) - MAX_LISTED} more)' if len(items) > MAX_LISTED else ''
    return f'{len(items)} {title}: ' + ', '.join(items[:MAX_LISTED]) + more


def load_weights(
    model: nn.Module, source: Source, strict: bool = True, param_key: Optional[str] = 'auto'
) -> Dict[str, list]:
    """Load weights into `model`, explaining any mismatch.

    strict=True raises CheckpointMismatchError listing missing keys, unexpected keys and shape
    differences. strict=False loads what fits (e.g. x4 from x2 weights, which lack the second
    upsampling conv) and returns/logs what was skipped.
    """
    state = read_state_dict(source, param_key)
    target = model.state_dict()
    for name in model.derived_state_keys() if isinstance(model, DerivedState) else ():
        if name in target and name not in state:
            state[name] = target[name]
    missing = [key for key in target if key not in state]
    unexpected = [key for key in state if key not in target]
    mismatched = [
        f'{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(target[key].shape)}'
        for key in target
        if key in state and state[key].shape != target[key].shape
    ]
    report = {'missing': missing, 'unexpected': unexpected, 'mismatched': mismatched}
    problems = [
        _listing(title, items)
        for title, items in (
            ('missing keys', missing),
            ('unexpected keys', unexpected),
            ('shape differences', mismatched),
        )
        if items
    ]
    name = f'checkpoint {source}' if not isinstance(source, Mapping) else 'the state dict'
    if problems and strict:
        raise CheckpointMismatchError(
            f'{name} does not fit {type(model).__name__}:\n  '
            + '\n  '.join(problems)
            + '\n  (the hyperparameters differ: check embed_dim, depths, num_heads, window_size, upscale, in_chans; '
            'to load only the matching weights set path.strict_load_g: false in the option file, or pass '
            'strict=False)'
        )
    if problems:
        logger.warning(f'loading {name} non-strictly; skipped:\n  ' + '\n  '.join(problems))
    fitting = {key: value for key, value in state.items() if key in target and value.shape == target[key].shape}
    model.load_state_dict(fitting, strict=not problems)
    return report


def atomic_save(obj, path: Union[str, os.PathLike]) -> None:
    """torch.save that never leaves a half-written file (see atomic_write). It writes into a Python
    stream: given a file name, torch's own writer reports a full disk as an errno-less RuntimeError."""
    atomic_write(path, lambda stream: torch.save(obj, stream))

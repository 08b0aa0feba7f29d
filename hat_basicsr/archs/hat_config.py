"""HAT hyperparameters from the weights alone.

A HAT checkpoint (BasicSR-trained, released, or a flat spandrel-style state dict) stores no
options, but every architectural choice leaves a trace in a tensor shape: this module reads them
back, so a `.pth` or `.safetensors` file is enough to rebuild the network. Options that shape no
tensor (conv_scale, img_range, qk_scale, drop rates, and img_size unless ape) get the release's values; a
safetensors file written by `hat-basicsr convert` carries the exact options in its metadata.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional

from torch import Tensor

from hat_basicsr.archs.hat_arch import NUM_FEAT
from hat_basicsr.errors import CheckpointError
from hat_basicsr.utils.weights import is_safetensors

METADATA_KEY = 'hat_basicsr.network_g'
BLOCK0 = 'layers.0.residual_group.blocks.0.'
OCAB0 = 'layers.0.residual_group.overlap_attn.'
REQUIRED_KEYS = (
    'conv_first.weight',
    'conv_last.weight',
    BLOCK0 + 'norm1.weight',
    BLOCK0 + 'attn.relative_position_bias_table',
    BLOCK0 + 'attn.qkv.weight',
    BLOCK0 + 'conv_block.cab.0.weight',
    BLOCK0 + 'conv_block.cab.3.attention.1.weight',
    BLOCK0 + 'mlp.fc1.weight',
    OCAB0 + 'relative_position_bias_table',
    OCAB0 + 'qkv.weight',
)
# The released networks (HAT-S, HAT, HAT-L, at any scale): the options all of them share, and what
# differs per variant.
RELEASE_OPTIONS = dict(
    window_size=16,
    overlap_ratio=0.5,
    mlp_ratio=2,
    conv_scale=0.01,
    img_size=64,
    img_range=1.0,
    upsampler='pixelshuffle',
    resi_connection='1conv',
)
RELEASE_VARIANTS = {
    'HAT-S': dict(embed_dim=144, depths=[6] * 6, num_heads=[6] * 6, compress_ratio=24, squeeze_factor=24),
    'HAT': dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, compress_ratio=3, squeeze_factor=30),
    'HAT-L': dict(embed_dim=180, depths=[6] * 12, num_heads=[6] * 12, compress_ratio=3, squeeze_factor=30),
}
# Options the weights cannot reveal; the release's values (those of every released option file).
UNOBSERVABLE_DEFAULTS = {'conv_scale': 0.01, 'img_range': 1.0, 'img_size': 64, 'qk_scale': None}


def _count(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    """Length of a ModuleList stored under `prefix` (`layers.` -> number of RHAGs)."""
    indices = {key[len(prefix) :].split('.', 1)[0] for key in state_dict if key.startswith(prefix)}
    return len([index for index in indices if index.isdigit()])


def _simplest_ratio(numerator: int, denominator: int, reproduces: Callable[[float], bool]) -> float:
    """The shortest decimal r near numerator/denominator for which the constructor rebuilds the same
    shapes: 0.5 rather than 0.5000000001, so inferred options read like hand-written ones."""
    exact = numerator / denominator
    for digits in range(1, 7):
        ratio = round(exact, digits)
        if reproduces(ratio):
            return int(ratio) if ratio.is_integer() else ratio
    raise CheckpointError(f'no ratio reproduces {numerator} from {denominator}')


def _divisor(dim: int, reduced: int, what: str) -> int:
    """The integer d with dim // d == reduced (the largest such d: the exact one when it divides)."""
    divisor = dim // reduced if reduced else 0
    if not divisor or dim // divisor != reduced:
        raise CheckpointError(f'{what}: no integer maps embed_dim {dim} to {reduced} channels')
    return divisor


def _square_side(count: int, what: str) -> int:
    side = math.isqrt(count)
    if side * side != count:
        raise CheckpointError(f'{what} has {count} rows, not a square number')
    return side


def _upscale(state_dict: Mapping[str, Tensor]) -> int:
    """×2 per [conv 64→256, PixelShuffle(2)] pair, ×3 for a single conv 64→576; ×1 without convs."""
    scale, index = 1, 0
    while f'upsample.{index}.weight' in state_dict:
        out_channels = state_dict[f'upsample.{index}.weight'].shape[0]
        if out_channels == 4 * NUM_FEAT:
            scale *= 2
        elif out_channels == 9 * NUM_FEAT and index == 0 and 'upsample.2.weight' not in state_dict:
            scale = 3
        else:
            raise CheckpointError(
                f'upsample.{index}.weight has {out_channels} output channels; HAT uses '
                f'{4 * NUM_FEAT} per x2 stage or a single {9 * NUM_FEAT} for x3'
            )
        index += 2
    return scale


def infer_hat_options(state_dict: Mapping[str, Tensor]) -> Dict:
    """HAT constructor kwargs (plus 'type': 'HAT') that rebuild the network these weights came from.

    Raises CheckpointError naming the missing keys when the state dict is not a HAT.
    """
    missing = [key for key in REQUIRED_KEYS if key not in state_dict]
    if missing:
        raise CheckpointError(
            f'not a HAT state dict: missing {", ".join(missing[:4])}'
            f'{f" (+{len(missing) - 4} more)" if len(missing) > 4 else ""}; '
            f'it has {len(state_dict)} keys, e.g. {", ".join(list(state_dict)[:3])}'
        )
    shape = lambda key: tuple(state_dict[key].shape)
    embed_dim, in_chans = shape('conv_first.weight')[:2]
    if shape('conv_last.weight')[1] != NUM_FEAT:
        raise CheckpointError(f'conv_last.weight reads {shape("conv_last.weight")[1]} features; HAT uses {NUM_FEAT}')
    window_size = (
        _square_side(shape(BLOCK0 + 'attn.relative_position_bias_table')[0], 'the window attention bias table') + 1
    ) // 2
    overlap_window = (
        _square_side(shape(OCAB0 + 'relative_position_bias_table')[0], 'the OCAB bias table') - window_size + 1
    )
    num_layers = _count(state_dict, 'layers.')
    depths = [_count(state_dict, f'layers.{i}.residual_group.blocks.') for i in range(num_layers)]
    num_heads = [
        shape(f'layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table')[1] for i in range(num_layers)
    ]
    mlp_hidden = shape(BLOCK0 + 'mlp.fc1.weight')[0]
    options = {
        'type': 'HAT',
        'in_chans': in_chans,
        'embed_dim': embed_dim,
        'depths': depths,
        'num_heads': num_heads,
        'window_size': window_size,
        'overlap_ratio': _simplest_ratio(
            overlap_window - window_size, window_size, lambda r: int(r * window_size) == overlap_window - window_size
        ),
        'compress_ratio': _divisor(embed_dim, shape(BLOCK0 + 'conv_block.cab.0.weight')[0], 'compress_ratio'),
        'squeeze_factor': _divisor(
            embed_dim, shape(BLOCK0 + 'conv_block.cab.3.attention.1.weight')[0], 'squeeze_factor'
        ),
        'mlp_ratio': _simplest_ratio(mlp_hidden, embed_dim, lambda r: int(embed_dim * r) == mlp_hidden),
        'upscale': _upscale(state_dict),
        'upsampler': 'pixelshuffle',
        'resi_connection': '1conv' if 'conv_after_body.weight' in state_dict else 'identity',
        'patch_norm': 'patch_embed.norm.weight' in state_dict,
        'ape': 'absolute_pos_embed' in state_dict,
        'qkv_bias': BLOCK0 + 'attn.qkv.bias' in state_dict,
        **UNOBSERVABLE_DEFAULTS,
    }
    if options['ape']:
        options['img_size'] = _square_side(shape('absolute_pos_embed')[1], 'absolute_pos_embed')
    return options


def read_metadata_options(path: str | Path) -> Optional[Dict]:
    """The network options stored in a safetensors file's metadata by `hat-basicsr convert`, if any."""
    if not is_safetensors(path):
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework='pt') as handle:
            metadata = handle.metadata() or {}
    except Exception as error:
        raise CheckpointError(f'cannot read safetensors header of {path}: {error}') from error
    if METADATA_KEY not in metadata:
        return None
    try:
        options = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise CheckpointError(f'{path}: metadata {METADATA_KEY} is not JSON ({error})') from error
    if not isinstance(options, dict):
        raise CheckpointError(f'{path}: metadata {METADATA_KEY} is not a mapping of options')
    return options


def checkpoint_options(path: str | Path, state_dict: Mapping[str, Tensor]) -> Dict:
    """Options for the network in `path`: inferred from the weights, overridden by stored metadata
    (which alone knows conv_scale, img_range and the training img_size)."""
    return {**infer_hat_options(state_dict), **(read_metadata_options(path) or {})}

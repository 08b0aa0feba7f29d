"""HAT's hyperparameters: what each accepts, the rules between them, and how to read them back from
the weights alone.

`HAT_OPTIONS` declares every argument an option file sets (kind, bounds, the paper's name);
`validate_hat_arguments` refuses, naming the argument, the settings that the release would crash
on later (HAT's constructor, the option checker and the CLI's model loading call it), and
`overlap_window_size` is the one formula for OCAB's window.

A HAT checkpoint (BasicSR-trained, released, or a flat spandrel-style state dict) stores no
options, but every architectural choice leaves a trace in a tensor shape: this module reads them
back, so a `.pth` or `.safetensors` file is enough to rebuild the network. Options that shape no
tensor (conv_scale, img_range, qk_scale, drop rates, and img_size unless ape) get the release's values; a
safetensors file written by `hat-basicsr convert` carries the exact options in its metadata.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

from torch import Tensor

from hat_basicsr.archs.attention import ATTN_IMPLS
from hat_basicsr.errors import CheckpointError, HATArgumentError
from hat_basicsr.utils.option_spec import Option, Section
from hat_basicsr.utils.weights import is_safetensors

from basicsr.archs.arch_util import to_2tuple

# Channels of the reconstruction head (conv_before_upsample -> upsample -> conv_last) in every HAT.
NUM_FEAT = 64
UPSAMPLERS = ('pixelshuffle',)
RESI_CONNECTIONS = ('1conv', 'identity')


def overlap_window_size(window_size: int, overlap_ratio: float) -> int:
    """OCAB's overlapping window M_o = (1 + gamma) M for window size M and overlap ratio gamma, with
    the release's rounding (gamma M truncated)."""
    return window_size + int(overlap_ratio * window_size)


def _integer(name: str, doc: str, minimum: int = 1) -> Option:
    return Option(name, 'integer', doc, minimum=minimum, floats_as_integers=False)


def _per_rhag(name: str, doc: str) -> Option:
    return Option(name, 'integers', doc, minimum=1, floats_as_integers=False)


def _pair(name: str, doc: str) -> Option:
    return Option(name, ('integer', 'integers'), doc, minimum=1, length=2, floats_as_integers=False)


# HAT's constructor arguments an option file sets (all of them but norm_layer, a class), with what
# each accepts on its own; the rules between arguments are validate_hat_arguments' (below).
HAT_OPTIONS = Section(
    (
        _pair('img_size', 'Training patch size (or [height, width]); sizes absolute_pos_embed with ape.'),
        _pair('patch_size', 'Pixels per token; 1 in every HAT.'),
        _integer('in_chans', 'Image channels (3 subtracts the DIV2K mean).'),
        _integer('embed_dim', 'Channels C of the deep features; a multiple of every num_heads entry.'),
        _per_rhag('depths', 'HABs per RHAG, one entry per RHAG.'),
        _per_rhag('num_heads', 'Attention heads per RHAG; each divides embed_dim.'),
        _integer('window_size', 'Side M of the attention windows.', minimum=2),
        _integer('compress_ratio', "The paper's beta: CAB compresses C to C / beta channels."),
        _integer('squeeze_factor', "The channel attention's squeeze factor: its gate pools C to C / squeeze."),
        Option('conv_scale', 'number', "The paper's alpha: the weight of the CAB branch in a HAB."),
        Option(
            'overlap_ratio',
            'number',
            "The paper's gamma: OCAB's overlapping windows have side (1 + gamma) M; gamma M must be even.",
            minimum=0,
        ),
        Option('mlp_ratio', 'number', 'Hidden channels of each MLP, as a multiple of embed_dim.', above=0),
        Option('qkv_bias', 'boolean', 'Whether the q, k, v projections have a bias.'),
        Option('qk_scale', ('number', 'null'), 'Attention logit scale; ~ for head_dim ** -0.5.'),
        Option(
            'drop_rate', 'number', 'Dropout after the patch embedding, the MLPs and projections.', minimum=0, maximum=1
        ),
        Option('attn_drop_rate', 'number', 'Dropout of the attention weights.', minimum=0, maximum=1),
        Option('drop_path_rate', 'number', 'Stochastic depth, rising linearly to this rate.', minimum=0, maximum=1),
        Option('ape', 'boolean', 'Learned absolute position embedding (fixes the input size to img_size).'),
        Option('patch_norm', 'boolean', 'Normalise the tokens after the patch embedding.'),
        Option('use_checkpoint', 'boolean', 'Gradient checkpointing of every block.'),
        _integer('upscale', 'Scale factor: 1, 3 or a power of two.'),
        Option('img_range', 'number', 'Pixel range the network works in (inputs are scaled by it).', above=0),
        Option(
            'upsampler',
            'string',
            'Reconstruction head.',
            choices=UPSAMPLERS,
            expected_text=f'one of {list(UPSAMPLERS)} (the release builds no reconstruction head for any other value)',
        ),
        Option(
            'resi_connection', 'string', "'1conv': a 3x3 conv closes every RHAG and the body.", choices=RESI_CONNECTIONS
        ),
        Option('attn_impl', 'string', "'sdpa' (fused) or 'reference' (the release's arithmetic).", choices=ATTN_IMPLS),
    ),
    doc='HAT, the Hybrid Attention Transformer (network_g of type HAT).',
)


def validate_hat_arguments(arguments: Mapping[str, Any]) -> None:
    """Raise HATArgumentError naming the argument for settings the release would crash on later
    (or, like img_range 0, train on silently into NaNs): first each argument against HAT_OPTIONS,
    then the rules between arguments. `arguments` holds every constructor argument by name (more
    are ignored), img_size and patch_size as an int or a (height, width) pair."""
    for name, value, expected in HAT_OPTIONS.refusals(arguments):
        raise HATArgumentError(name, f'got {value!r}, expected {expected}')
    names = inspect.signature(_check_argument_rules).parameters
    _check_argument_rules(**{name: arguments[name] for name in names})


def _check_argument_rules(
    *,
    img_size: Union[int, Sequence[int]],
    patch_size: Union[int, Sequence[int]],
    embed_dim: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    window_size: int,
    compress_ratio: int,
    squeeze_factor: int,
    overlap_ratio: float,
    upscale: int,
) -> None:
    """The rules between arguments of validate_hat_arguments; its signature names the arguments they read."""
    if len(depths) != len(num_heads):
        raise HATArgumentError(
            'depths', f'got {list(depths)}, expected one entry per RHAG, as many as num_heads ({len(num_heads)})'
        )
    if not depths:
        raise HATArgumentError('depths', 'got [], expected at least one RHAG')
    for heads in num_heads:
        if embed_dim % heads:
            raise HATArgumentError(
                'embed_dim',
                f'got {embed_dim}, expected a multiple of every num_heads entry ({heads} does not divide it)',
            )
    for name, divisor in dict(compress_ratio=compress_ratio, squeeze_factor=squeeze_factor).items():
        if embed_dim // divisor < 1:
            raise HATArgumentError(name, f'got {divisor}, which leaves no channels of embed_dim={embed_dim}')
    extra = overlap_window_size(window_size, overlap_ratio) - window_size
    if extra % 2:
        raise HATArgumentError(
            'overlap_ratio',
            f'got {overlap_ratio}, which with window_size={window_size} enlarges the overlapping window by '
            f'{extra} pixels; expected an even number of pixels (split equally on both sides)',
        )
    if upscale != 3 and upscale & (upscale - 1):
        raise HATArgumentError(
            'upscale', f'got {upscale}, expected 1, 3 or a power of two (what pixelshuffle supports)'
        )
    img_size, patch_size = to_2tuple(img_size), to_2tuple(patch_size)
    if min(img_size[0] // patch_size[0], img_size[1] // patch_size[1]) < window_size:
        raise HATArgumentError(
            'img_size',
            f'got {tuple(img_size)} (patch_size {tuple(patch_size)}), expected at least window_size={window_size} '
            'tokens per side; the release shrinks the window below its bias tables and fails',
        )


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
    shapes: 0.5 rather than 0.5000000001, so inferred options read like hand-written ones. Rounded
    to nearest first, then up: the constructor truncates, so 4 of 12 needs 0.4, never 0.33...3."""
    exact = numerator / denominator
    nearest = (round(exact, digits) for digits in range(1, 7))
    rounded_up = (math.ceil(exact * 10**digits) / 10**digits for digits in range(1, 7))
    for ratio in (*nearest, *rounded_up):
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
            overlap_window - window_size, window_size, lambda r: overlap_window_size(window_size, r) == overlap_window
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

"""`hat-basicsr convert SRC DST`: HAT weights between .pth and .safetensors (chosen by DST's extension).

The source is read safely (safetensors, or torch.load with weights_only) in any layout
`read_state_dict` accepts (BasicSR `params_ema`/`params`, flat, `module.`/`_orig_mod.` prefixes).
It is checked strictly against the HAT its shapes describe and written without wrapper prefixes,
with the two relative-position index buffers that spandrel's HAT detection requires:
- .safetensors: the state dict, with the network options as JSON in the metadata entry
  `hat_basicsr.network_g` (our loader uses them; spandrel ignores them);
- .pth: BasicSR layout `{KEY: state_dict}` with KEY = --pth-key (default params_ema, as the
  released HAT weights; BasicSR option files then need `param_key_g: params_ema`).
Options that no tensor records (conv_scale, img_range, qk_scale, and img_size, which turns the shifted
windows off when it is not larger than the window) come from the release's defaults, from the source's
metadata, or from `--options` (the training option file, whose network_g wins); they are stored
only in safetensors metadata. When they differ from the release's values a warning says that
loaders reading only the weights (spandrel, chaiNNer, ComfyUI, or any loader of a .pth) will
assume the release's values and compute something else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

from hat_basicsr.cli.arguments import add_subcommand
from hat_basicsr.errors import CheckpointError, SourceError
from hat_basicsr.utils.files import atomic_write

if TYPE_CHECKING:
    from torch import Tensor

PTH_SUFFIXES = ('.pth', '.pt')


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_subcommand(subparsers, 'convert', 'convert HAT weights between .pth and .safetensors', __doc__)
    parser.add_argument('src', type=Path, help='checkpoint to read (.pth/.pt/.ckpt/.safetensors)')
    parser.add_argument('dst', type=Path, help='file to write; its extension picks the format')
    parser.add_argument('--param-key', default='auto', help='source entry to read (default: params_ema, then params)')
    parser.add_argument('--options', type=Path, help='BasicSR option file whose network_g describes the source')
    parser.add_argument('--pth-key', default='params_ema', help='entry of a .pth output (default: params_ema)')
    parser.add_argument('--force', action='store_true', help='overwrite DST')
    parser.set_defaults(func=run)


def canonical_state_dict(state: Dict[str, Tensor], options: Dict) -> Dict[str, Tensor]:
    """The state dict in the model's key order, verified strictly against HAT(**options), with the
    derived index buffers added when the source lacks them; source dtypes are kept."""
    from hat_basicsr.cli.model_source import build_network
    from hat_basicsr.utils.weights import load_weights

    model = build_network(options)
    load_weights(model, state, strict=True)
    return {key: (state[key] if key in state else value).contiguous() for key, value in model.state_dict().items()}


def portability_warnings(options: Dict) -> List[str]:
    """Options that change the output but that loaders reading only the weights cannot recover."""
    from hat_basicsr.archs.hat_config import UNOBSERVABLE_DEFAULTS

    warnings = [
        f'{key}={options[key]} is not recorded by any tensor; loaders that read only the weights '
        f'(spandrel/chaiNNer/ComfyUI, or a .pth anywhere) assume {key}={UNOBSERVABLE_DEFAULTS[key]}'
        for key in ('conv_scale', 'img_range', 'qk_scale')
        if options.get(key, UNOBSERVABLE_DEFAULTS[key]) != UNOBSERVABLE_DEFAULTS[key]
    ]
    size = options.get('img_size', UNOBSERVABLE_DEFAULTS['img_size'])
    if not options.get('ape') and min(size if isinstance(size, (list, tuple)) else [size]) <= options['window_size']:
        warnings.append(
            f'img_size={size} <= window_size={options["window_size"]} turns the shifted windows off; '
            f'loaders that read only the weights assume img_size={UNOBSERVABLE_DEFAULTS["img_size"]}, '
            'which keeps them on'
        )
    return warnings


def save_safetensors(state: Dict[str, Tensor], options: Dict, path: Path) -> None:
    """Serialised in memory and written by atomic_write: safetensors' save_file would put its own
    0600 file in place of our temporary one and report a full disk as an errno-less SafetensorError."""
    from safetensors.torch import save

    from hat_basicsr.archs.hat_config import METADATA_KEY

    metadata = {METADATA_KEY: json.dumps(options), 'format': 'pt'}
    atomic_write(path, lambda stream: stream.write(save(state, metadata=metadata)))


def convert(
    src: Path, dst: Path, param_key: str = 'auto', pth_key: str = 'params_ema', option_file: Optional[Path] = None
) -> Dict:
    """Convert `src` to `dst`; returns the network options (also written to safetensors metadata)."""
    from hat_basicsr.cli.model_source import OPTION_SUFFIXES, read_option_file, resolve_source
    from hat_basicsr.utils.weights import SAFETENSORS_SUFFIXES, atomic_save, is_safetensors

    suffix = dst.suffix.lower()
    if suffix not in PTH_SUFFIXES + SAFETENSORS_SUFFIXES:
        raise SourceError(
            f'{dst}: unknown output format {suffix!r}; use one of {", ".join(PTH_SUFFIXES + SAFETENSORS_SUFFIXES)}'
        )
    if src.resolve() == dst.resolve():
        raise SourceError(f'{dst} is the source itself')
    if src.suffix.lower() in OPTION_SUFFIXES:
        raise SourceError(f'{src}: convert reads a checkpoint (pass an option file with --options)')
    spec = resolve_source(src, param_key)
    options, state = dict(spec.network), spec.weights
    if option_file is not None:
        network = read_option_file(option_file)['network_g']
        if network['type'] != 'HAT':
            raise SourceError(f'{option_file}: network_g is a {network["type"]}, not a HAT')
        options.update(network)
    try:
        state = canonical_state_dict(state, options)
    except CheckpointError as error:
        described_by = f'the network options of {option_file}' if option_file else 'the options read from its weights'
        raise SourceError(f'{src} with {described_by}: {error}') from error
    if is_safetensors(dst):
        save_safetensors(state, options, dst)
    else:
        atomic_save({pth_key: state}, dst)
    return options


def run(args: argparse.Namespace) -> int:
    if args.dst.exists() and not args.force:
        raise SourceError(f'{args.dst} exists (use --force to overwrite)')
    options = convert(args.src, args.dst, args.param_key, args.pth_key, args.options)
    for warning in portability_warnings(options):
        print(f'hat-basicsr convert: warning: {warning}', file=sys.stderr)
    print(
        f'{args.src} -> {args.dst}: HAT x{options["upscale"]}, embed_dim {options["embed_dim"]}, '
        f'depths {options["depths"]}, window {options["window_size"]}'
    )
    return 0

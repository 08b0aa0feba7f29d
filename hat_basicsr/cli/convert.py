"""`hat-basicsr convert SRC DST`: HAT weights between .pth and .safetensors (chosen by DST's extension).

The source is read safely (safetensors, or torch.load with weights_only) in any layout
`read_state_dict` accepts (BasicSR `params_ema`/`params`, flat, `module.`/`_orig_mod.` prefixes).
It is checked strictly against the HAT its shapes describe, and written flat with the two
relative-position index buffers that spandrel's HAT detection requires:
- .safetensors: the state dict, with the network options as JSON in the metadata entry
  `hat_basicsr.network_g` (our loader uses them; spandrel ignores them);
- .pth: BasicSR layout `{KEY: state_dict}` with KEY = --pth-key (default params_ema, as the
  released HAT weights; BasicSR option files then need `param_key_g: params_ema`).
Options that no tensor records (conv_scale, img_range, img_size) are stored only in safetensors
metadata; when they differ from the release's values a warning says that loaders reading only the
weights (spandrel, chaiNNer, ComfyUI, or our loader for a .pth) will assume the release's values.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

from torch import Tensor

from hat_basicsr.cli.common import SourceError, build_network, report_error
from hat_basicsr.utils.hat_config import METADATA_KEY, UNOBSERVABLE_DEFAULTS, checkpoint_options
from hat_basicsr.utils.weights import CheckpointError, atomic_save, load_weights, read_state_dict

PTH_SUFFIXES = ('.pth', '.pt')
SAFETENSORS_SUFFIX = '.safetensors'


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser('convert', help='convert HAT weights between .pth and .safetensors',
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', type=Path, help='checkpoint to read (.pth/.pt/.ckpt/.safetensors)')
    parser.add_argument('dst', type=Path, help='file to write; its extension picks the format')
    parser.add_argument('--param-key', default='auto', help='source entry to read (default: params_ema, then params)')
    parser.add_argument('--pth-key', default='params_ema', help='entry of a .pth output (default: params_ema)')
    parser.add_argument('--force', action='store_true', help='overwrite DST')
    parser.set_defaults(func=run)


def canonical_state_dict(state: Dict[str, Tensor], options: Dict) -> Dict[str, Tensor]:
    """The state dict in the model's key order, verified strictly against HAT(**options), with the
    derived index buffers added when the source lacks them; source dtypes are kept."""
    model = build_network(options)
    load_weights(model, state, strict=True)
    return {key: (state[key] if key in state else value).contiguous() for key, value in model.state_dict().items()}


def portability_warnings(options: Dict) -> List[str]:
    """Options that loaders reading only the weights cannot recover."""
    return [f'{key}={options[key]} is not recorded by any tensor; loaders that read only the weights '
            f'(spandrel/chaiNNer/ComfyUI, or a .pth anywhere) assume {key}={default}'
            for key, default in UNOBSERVABLE_DEFAULTS.items()
            if key in options and options[key] != default and not (key == 'img_size' and options.get('ape'))]


def save_safetensors(state: Dict[str, Tensor], options: Dict, path: Path) -> None:
    """Write atomically: a temporary file beside `path`, then a rename."""
    from safetensors.torch import save_file
    handle, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(handle)
    try:
        save_file(state, tmp, metadata={METADATA_KEY: json.dumps(options), 'format': 'pt'})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def convert(src: Path, dst: Path, param_key: str = 'auto', pth_key: str = 'params_ema') -> Dict:
    """Convert `src` to `dst`; returns the network options (also written to safetensors metadata)."""
    suffix = dst.suffix.lower()
    if suffix not in PTH_SUFFIXES + (SAFETENSORS_SUFFIX, ):
        raise SourceError(f'{dst}: unknown output format {suffix!r}; use {", ".join(PTH_SUFFIXES)} or .safetensors')
    if src.resolve() == dst.resolve():
        raise SourceError(f'{dst} is the source itself')
    state = read_state_dict(src, param_key)
    options = checkpoint_options(src, state)
    state = canonical_state_dict(state, options)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if suffix == SAFETENSORS_SUFFIX:
        save_safetensors(state, options, dst)
    else:
        atomic_save({pth_key: state}, dst)
    return options


def run(args: argparse.Namespace) -> int:
    if args.dst.exists() and not args.force:
        return report_error('convert', SourceError(f'{args.dst} exists (use --force to overwrite)'))
    try:
        options = convert(args.src, args.dst, args.param_key, args.pth_key)
    except (SourceError, CheckpointError) as error:
        return report_error('convert', error)
    for warning in portability_warnings(options):
        print(f'hat-basicsr convert: warning: {warning}', file=sys.stderr)
    print(f'{args.src} -> {args.dst}: HAT x{options["upscale"]}, embed_dim {options["embed_dim"]}, '
          f'depths {options["depths"]}, window {options["window_size"]}')
    return 0

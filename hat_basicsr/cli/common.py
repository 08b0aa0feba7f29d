"""What the subcommands share: turning a checkpoint or an option file into a model, and image I/O.

A model source is either a checkpoint (.pth/.pt/.ckpt/.safetensors: a HAT whose options are read
from its weights) or a BasicSR option file (.yml/.yaml: any registered architecture, built by
`basicsr.archs.build_network` from `network_g`, weights from `path.pretrain_network_g`).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import yaml
from torch import Tensor, nn

import hat_basicsr  # noqa: F401  (registers HAT before build_network looks it up)
from hat_basicsr.utils.hat_config import checkpoint_options
from hat_basicsr.utils.weights import CheckpointError, extract_state_dict, load_weights, read_checkpoint

OPTION_SUFFIXES = ('.yml', '.yaml')
HIGH_DEPTH_SUFFIXES = ('.png', '.tif', '.tiff')
ENCODE_PARAMS = {'.jpg': [cv2.IMWRITE_JPEG_QUALITY, 95], '.jpeg': [cv2.IMWRITE_JPEG_QUALITY, 95]}
SAMPLE_MAX = {np.dtype(np.uint8): (8, 255.0), np.dtype(np.uint16): (16, 65535.0)}


class SourceError(ValueError):
    """A model source (option file or checkpoint) that cannot give a model."""


class ImageError(ValueError):
    """An image that cannot be read or written; the message names the file."""


@dataclass
class ModelSpec:
    """Everything needed to build a model, before any tensor is allocated."""
    network: Dict  # network_g-style options, including 'type'
    scale: int
    weights: Union[None, Path, Dict[str, Tensor]]  # a path (option file) or loaded weights (checkpoint)
    param_key: Optional[str] = 'auto'
    strict: bool = True


def report_error(command: str, error: BaseException) -> int:
    """One line on stderr instead of a traceback; the exit status for a failed subcommand."""
    print(f'hat-basicsr {command}: error: {error}', file=sys.stderr)
    return 2


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; an explicit device that does not exist is refused."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise SourceError(f'unknown device {name!r} ({error})') from error
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SourceError(f'device {name!r} requested but CUDA is not available')
    return device


def read_option_file(path: Path) -> Dict:
    try:
        options = yaml.safe_load(path.read_text(encoding='utf-8'))
    except (OSError, yaml.YAMLError) as error:
        raise SourceError(f'cannot read option file {path}: {error}') from error
    if not isinstance(options, dict) or not isinstance(options.get('network_g'), dict):
        raise SourceError(f'option file {path} has no network_g section')
    if 'type' not in options['network_g']:
        raise SourceError(f'option file {path}: network_g has no type')
    return options


def _option_file_spec(path: Path, param_key: Optional[str]) -> ModelSpec:
    options = read_option_file(path)
    network = options['network_g']
    scale = options.get('scale', network.get('upscale', network.get('scale')))
    if not isinstance(scale, int):
        raise SourceError(f'option file {path}: no integer scale (top-level scale or network_g upscale)')
    path_options = options.get('path') or {}
    weights = path_options.get('pretrain_network_g')
    if weights:
        weights = Path(os.path.expanduser(str(weights)))
        # BasicSR resolves relative paths against the working directory; the option file's own
        # folder is tried next so a model folder can be moved as a whole.
        if not weights.is_absolute() and not weights.exists() and (path.parent / weights).exists():
            weights = path.parent / weights
    return ModelSpec(network=network, scale=scale, weights=weights or None,
                     param_key=path_options.get('param_key_g', param_key),
                     strict=path_options.get('strict_load_g', True))


def resolve_source(source: Union[str, os.PathLike], param_key: Optional[str] = 'auto') -> ModelSpec:
    """Read an option file or a checkpoint into a ModelSpec (checkpoints: options from the weights)."""
    path = Path(source)
    if not path.is_file():
        raise SourceError(f'model source not found: {path}')
    if path.suffix.lower() in OPTION_SUFFIXES:
        return _option_file_spec(path, param_key)
    checkpoint = read_checkpoint(path)  # its errors name the file
    try:
        state = extract_state_dict(checkpoint, param_key)
        options = checkpoint_options(path, state)
    except CheckpointError as error:
        raise SourceError(f'{path}: {error}') from error
    return ModelSpec(network=options, scale=options['upscale'], weights=state, param_key=None)


def build_network(network: Dict) -> nn.Module:
    """basicsr.archs.build_network with its failures (unknown type, bad argument) as SourceError."""
    from basicsr.archs import build_network as basicsr_build_network
    try:
        return basicsr_build_network(deepcopy(network))
    except (KeyError, TypeError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise SourceError(f'cannot build network {network.get("type")!r}: {message}') from error


def load_model(source: Union[str, os.PathLike], device: Union[str, torch.device], param_key: Optional[str] = 'auto',
               allow_random_init: bool = False) -> Tuple[nn.Module, int]:
    """(model in eval mode on `device`, scale) from a checkpoint or a BasicSR option file.

    An option file without `path.pretrain_network_g` is refused unless `allow_random_init`
    (analysis tools that study an untrained network).
    """
    spec = resolve_source(source, param_key)
    if spec.weights is None and not allow_random_init:
        raise SourceError(f'option file {source} sets no path.pretrain_network_g: there are no weights to load')
    model = build_network(spec.network)
    if spec.weights is not None:
        load_weights(model, spec.weights, strict=spec.strict, param_key=spec.param_key)
    device = resolve_device(device) if isinstance(device, str) else device
    return model.eval().to(device), spec.scale


def read_image(path: Union[str, os.PathLike]) -> Tuple[np.ndarray, Optional[np.ndarray], int]:
    """(float32 HxWxC in [0, 1], C = 1 (gray) or 3 (RGB); alpha HxW or None; bits per sample 8 or 16).

    Any file OpenCV decodes; samples stay exact (IMREAD_UNCHANGED, no 8-bit conversion).
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        raise ImageError(f'{path}: cannot read ({error.strerror or error})') from error
    if data.size == 0:
        raise ImageError(f'{path}: empty file')
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise ImageError(f'{path}: cannot decode ({error})') from error
    if image is None:
        raise ImageError(f'{path}: cannot decode (truncated or corrupt file, or not an image)')
    if image.dtype not in SAMPLE_MAX:
        raise ImageError(f'{path}: unsupported sample type {image.dtype} (8- and 16-bit integers are supported)')
    bit_depth, peak = SAMPLE_MAX[image.dtype]
    image = image.astype(np.float32) / peak
    if image.ndim == 2:
        image = image[..., None]
    channels = image.shape[2]
    if channels not in (1, 2, 3, 4):
        raise ImageError(f'{path}: {channels} channels are not supported')
    alpha = image[..., -1] if channels in (2, 4) else None
    color = image[..., :3][..., ::-1] if channels >= 3 else image[..., :1]
    return np.ascontiguousarray(color), alpha, bit_depth


def write_image(path: Union[str, os.PathLike], array: np.ndarray, bit_depth: int = 8,
                alpha: Optional[np.ndarray] = None) -> None:
    """Write float RGB (HxWx3) or gray (HxW or HxWx1) in [0, 1], with optional alpha, atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if bit_depth not in (8, 16):
        raise ImageError(f'{path}: bit depth {bit_depth} is not supported (8 or 16)')
    if bit_depth == 16 and suffix not in HIGH_DEPTH_SUFFIXES:
        raise ImageError(f'{path}: {suffix} cannot hold 16-bit samples (use {", ".join(HIGH_DEPTH_SUFFIXES)})')
    array = array if array.ndim == 3 else array[..., None]
    if alpha is not None and array.shape[2] == 1:  # encoders take 1, 3 or 4 channels: gray+alpha as BGRA
        array = np.repeat(array, 3, axis=2)
    planes = [array[..., ::-1]] if array.shape[2] == 3 else [array]
    if alpha is not None:
        planes.append(alpha[..., None])
    dtype, peak = (np.uint8, 255.0) if bit_depth == 8 else (np.uint16, 65535.0)
    image = np.rint(np.clip(np.concatenate(planes, axis=2), 0, 1) * peak).astype(dtype)
    image = image[..., 0] if image.shape[2] == 1 else image
    try:
        ok, encoded = cv2.imencode(suffix, image, ENCODE_PARAMS.get(suffix, []))
    except cv2.error as error:
        raise ImageError(f'{path}: cannot encode as {suffix} ({error})') from error
    if not ok:
        raise ImageError(f'{path}: cannot encode as {suffix}')
    atomic_write(path, lambda tmp: tmp.write_bytes(encoded.tobytes()))


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a temporary file beside `path`, then rename it: readers (and --skip-existing)
    never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(handle)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run_command(add_parser: Callable[[argparse._SubParsersAction], None], argv: Sequence[str]) -> int:
    """Parse `argv` (starting with the subcommand name) with one subcommand's parser and run it,
    without importing the others (used by tests)."""
    parser = argparse.ArgumentParser(prog='hat-basicsr')
    add_parser(parser.add_subparsers(dest='command', required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)

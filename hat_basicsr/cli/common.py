"""What the subcommands share: turning a checkpoint or an option file into a model, and image I/O.

A model source is either a checkpoint (.pth/.pt/.ckpt/.safetensors: a HAT whose options are read
from its weights) or a BasicSR option file (.yml/.yaml: any registered architecture, built by
`basicsr.archs.build_network` from `network_g`, weights from `path.pretrain_network_g`).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import yaml
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

import hat_basicsr  # noqa: F401  (registers HAT before build_network looks it up)
from hat_basicsr.errors import CheckpointError, ImageError, OptionError, SourceError
from hat_basicsr.models.hat_model import tile_options
from hat_basicsr.utils.files import atomic_write
from hat_basicsr.utils.hat_config import checkpoint_options
from hat_basicsr.utils.weights import extract_state_dict, load_weights, read_checkpoint

from basicsr.utils.color_util import rgb2ycbcr, ycbcr2rgb

OPTION_SUFFIXES = ('.yml', '.yaml')
HIGH_DEPTH_SUFFIXES = ('.png', '.tif', '.tiff')
ENCODE_PARAMS = {'.jpg': [cv2.IMWRITE_JPEG_QUALITY, 95], '.jpeg': [cv2.IMWRITE_JPEG_QUALITY, 95]}
# Images larger than this are refused before decoding (upscale's --max-pixels); OpenCV cannot decode
# more than 2**30 pixels in any case.
DEFAULT_MAX_PIXELS = 100_000_000
SAMPLE_MAX = {np.dtype(np.uint8): (8, 255.0), np.dtype(np.uint16): (16, 65535.0)}
EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientation -> how to turn the stored (H, W, C) pixels upright (PIL's exif_transpose, in numpy).
UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


@dataclass
class ModelSpec:
    """Everything needed to build a model, before any tensor is allocated."""
    network: Dict  # network_g-style options, including 'type'
    scale: int
    weights: Union[None, Path, Dict[str, Tensor]]  # a path (option file) or loaded weights (checkpoint)
    param_key: Optional[str] = 'auto'
    strict: bool = True
    tile: Optional[Dict[str, int]] = None  # an option file's `tile: {tile_size, tile_pad}`


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
    network_scale = network.get('upscale', network.get('scale'))
    scale = options.get('scale', network_scale)
    if not isinstance(scale, int):
        raise SourceError(f'option file {path}: no integer scale (top-level scale or network_g upscale)')
    if network_scale is not None and network_scale != scale:
        raise SourceError(f'option file {path}: scale {scale} but network_g upscales by {network_scale}')
    try:
        tile = tile_options(options)
    except OptionError as error:
        raise SourceError(f'option file {path}: {error}') from error
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
                     strict=path_options.get('strict_load_g', True), tile=tile)


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


def instantiate(spec: ModelSpec, source: Union[str, os.PathLike], device: Union[str, torch.device],
                allow_random_init: bool = False) -> nn.Module:
    """The model `spec` describes, with its weights, in eval mode on `device`.

    An option file without `path.pretrain_network_g` is refused unless `allow_random_init`
    (analysis tools that study an untrained network).
    """
    if spec.weights is None and not allow_random_init:
        raise SourceError(f'option file {source} sets no path.pretrain_network_g: there are no weights to load')
    model = build_network(spec.network)
    if spec.weights is not None:
        load_weights(model, spec.weights, strict=spec.strict, param_key=spec.param_key)
    device = resolve_device(device) if isinstance(device, str) else device
    return model.eval().to(device)


def load_model(source: Union[str, os.PathLike], device: Union[str, torch.device], param_key: Optional[str] = 'auto',
               allow_random_init: bool = False) -> Tuple[nn.Module, int]:
    """(model in eval mode on `device`, scale) from a checkpoint or a BasicSR option file."""
    spec = resolve_source(source, param_key)
    return instantiate(spec, source, device, allow_random_init), spec.scale


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A gray (HxWx1) image replicated to RGB; RGB as it is."""
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def luma(image: np.ndarray) -> np.ndarray:
    """Y (HxWx1) of a gray or RGB float image, in the range BasicSR's `color: y` datasets train
    1-channel models on (ITU-R BT.601, 16/255..235/255), not OpenCV's full-range YCrCb."""
    return rgb2ycbcr(as_rgb(image), y_only=True)[..., None]


def upscale_luma(image: np.ndarray, run_model: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """A gray or RGB image through a 1-channel (luminance) model: Y by the model, chroma bicubically.

    The output has the input's channels; gray stays gray (its chroma is neutral).
    """
    ycbcr = rgb2ycbcr(as_rgb(image))
    y = run_model(ycbcr[..., :1])
    chroma = cv2.resize(ycbcr[..., 1:], (y.shape[1], y.shape[0]), interpolation=cv2.INTER_CUBIC)
    result = np.clip(ycbcr2rgb(np.concatenate([y, chroma], axis=2)), 0, 1)
    return result.mean(axis=2, keepdims=True) if image.shape[2] == 1 else result


def read_image(path: Union[str, os.PathLike], max_pixels: int = DEFAULT_MAX_PIXELS
               ) -> Tuple[np.ndarray, Optional[np.ndarray], int]:
    """(float32 HxWxC in [0, 1], C = 1 (gray) or 3 (RGB); alpha HxW or None; bits per sample 8 or 16).

    Any file OpenCV decodes; samples stay exact (IMREAD_UNCHANGED, no 8-bit conversion), and the
    EXIF orientation, which IMREAD_UNCHANGED ignores, is applied so photos come out upright. Images
    of more than `max_pixels` pixels are refused, from their header when PIL can parse it (before
    anything is decoded), else after decoding.
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        raise ImageError(f'{path}: cannot read ({error.strerror or error})') from error
    if data.size == 0:
        raise ImageError(f'{path}: empty file')
    orientation = header_orientation(path, data, max_pixels)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise ImageError(f'{path}: cannot decode ({error})') from error
    if image is None:
        raise ImageError(f'{path}: cannot decode (truncated or corrupt file, or not an image)')
    check_pixels(path, image.shape[1], image.shape[0], max_pixels)
    if image.dtype not in SAMPLE_MAX:
        raise ImageError(f'{path}: unsupported sample type {image.dtype} (8- and 16-bit integers are supported)')
    bit_depth, peak = SAMPLE_MAX[image.dtype]
    image = image.astype(np.float32) / peak
    if image.ndim == 2:
        image = image[..., None]
    image = UPRIGHT.get(orientation, lambda a: a)(image)
    channels = image.shape[2]
    if channels not in (1, 2, 3, 4):
        raise ImageError(f'{path}: {channels} channels are not supported')
    alpha = np.ascontiguousarray(image[..., -1]) if channels in (2, 4) else None
    color = image[..., :3][..., ::-1] if channels >= 3 else image[..., :1]
    return np.ascontiguousarray(color), alpha, bit_depth


def silence_opencv() -> None:
    """Our one-line reports replace OpenCV's own log lines about files it cannot decode."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def check_pixels(path: Union[str, os.PathLike], width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(f'{path}: {width}x{height} is {width * height:,} pixels, more than the limit of '
                         f'{max_pixels:,} (--max-pixels)')


def header_orientation(path: Union[str, os.PathLike], data: np.ndarray, max_pixels: int) -> int:
    """The EXIF orientation (1-8) of an encoded image, 1 (as stored) when it has none or PIL cannot
    parse its header; an ImageError when the header declares more than `max_pixels` pixels.

    PIL's own decompression-bomb limit is lifted meanwhile: `max_pixels` replaces it, and PIL only
    reads headers here (OpenCV decodes), except that PNG's EXIF lookup decodes, after the check.
    """
    unparsable = (UnidentifiedImageError, OSError, ValueError, SyntaxError)  # formats or headers PIL cannot parse
    bomb_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        header = Image.open(io.BytesIO(data.tobytes()))
    except unparsable:
        return 1
    finally:
        Image.MAX_IMAGE_PIXELS = bomb_limit
    with header:
        check_pixels(path, *header.size, max_pixels)
        try:
            return int(header.getexif().get(EXIF_ORIENTATION_TAG, 1))
        except unparsable:
            return 1


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
    atomic_write(path, lambda stream: stream.write(encoded.tobytes()))


def run_command(add_parser: Callable[[argparse._SubParsersAction], None], argv: Sequence[str]) -> int:
    """Parse `argv` (starting with the subcommand name) with one subcommand's parser and run it,
    without importing the others (used by tests)."""
    parser = argparse.ArgumentParser(prog='hat-basicsr')
    add_parser(parser.add_subparsers(dest='command', required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)

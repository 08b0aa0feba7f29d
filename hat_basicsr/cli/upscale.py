"""`hat-basicsr upscale`: super-resolve an image or a folder of images into an output folder.

Images keep their format, bit depth (16-bit stays 16-bit) and colour layout:
- RGBA: the colour goes through the model; the alpha plane is upscaled on its own (by default with
  the model, as a gray image, so edges stay as sharp as the colour; `--alpha bicubic` is cheaper)
  and reattached. A constant alpha is simply extended.
- gray image, 3-channel model: the gray plane is replicated to RGB, and the output's channel mean
  is written back as gray.
- 1-channel model (trained on luminance, BasicSR's `color: y`): the model upscales Y in BasicSR's
  range (BT.601, as its datasets compute it), chroma is upscaled bicubically; RGB comes back as RGB,
  gray as gray.
- JPEG/TIFF/WebP EXIF orientation is applied on reading, so outputs are stored upright (metadata,
  the ICC profile included, is not copied to the output).
Outputs keep the input's name (plus --suffix) and format; a folder is read non-recursively. A file
that cannot be read or processed (over --max-pixels, or a model output with NaN or infinite values)
is reported on one line and the rest continue; the exit status is 1 when any file failed, 2 when
nothing could start (bad model, device, input path, an output folder that cannot be written, or a
folder without images). Temporary files that a killed run left for this run's outputs are removed
at the start. With an option file as the model, its `tile:` section
(tile_size, tile_pad) is the default for --tile and --tile-overlap.
Under torchrun each rank upscales every WORLD_SIZE-th input on its own GPU (cuda:LOCAL_RANK) and
rank 0 prints one summary for the job; `--shard K/N` splits the inputs the same way for array jobs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Union

from hat_basicsr.cli.arguments import add_subcommand, report_error
from hat_basicsr.errors import ImageError, OutputError, SourceError
from hat_basicsr.utils.defaults import DEFAULT_MAX_PIXELS, DEFAULT_TILE_PAD
from hat_basicsr.utils.files import ensure_writable_folder, remove_stale_temporaries
from hat_basicsr.utils.sharding import Shard, local_rank, sum_over_ranks

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from hat_basicsr.utils.onnx_deploy import OnnxModel

BACKENDS = ('torch', 'onnxruntime')
Runner = Callable[['np.ndarray'], 'np.ndarray']


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_subcommand(subparsers, 'upscale', 'super-resolve images with a HAT (or any BasicSR) model', __doc__)
    parser.add_argument('input', type=Path, help='an image file or a folder of images')
    parser.add_argument('-o', '--output', type=Path, required=True, help='output folder')
    parser.add_argument(
        '-m',
        '--model',
        required=True,
        help='checkpoint (.pth/.safetensors) or BasicSR option file (.yml); .onnx with --backend onnxruntime',
    )
    parser.add_argument(
        '--param-key', default='auto', help='checkpoint entry to load (default: params_ema, then params)'
    )
    parser.add_argument(
        '--tile',
        type=int,
        help="tile side in input pixels; 0 = whole image (default: the option file's tile_size, else 0)",
    )
    parser.add_argument(
        '--tile-overlap',
        type=int,
        help=f"context around each tile in input pixels (default: the option file's tile_pad, else {DEFAULT_TILE_PAD})",
    )
    parser.add_argument(
        '--backend',
        choices=BACKENDS,
        default=BACKENDS[0],
        help="'torch' (MODEL: checkpoint or option file) or 'onnxruntime' (MODEL: an .onnx file, "
        'e.g. from `hat-basicsr export`)',
    )
    parser.add_argument('--bf16', action='store_true', help='run in bfloat16 (CPU: weights cast once; CUDA: autocast)')
    parser.add_argument('--device', default='auto', help="'auto' (CUDA if available), 'cpu', 'cuda:1', ...")
    parser.add_argument(
        '--alpha', choices=('model', 'bicubic'), default='model', help='how to upscale an alpha channel'
    )
    parser.add_argument('--suffix', default='', help='appended to each output file name stem')
    parser.add_argument('--skip-existing', action='store_true', help='leave images whose output exists')
    parser.add_argument(
        '--shard',
        type=shard_argument,
        default=Shard(),
        metavar='K/N',
        help='process only the K-th (0-based) of N disjoint shares of the sorted inputs (array jobs); '
        'under torchrun each rank also takes its share by itself',
    )
    parser.add_argument(
        '--max-pixels',
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help='refuse input images of more '
        f'pixels (width x height), before decoding them (default: {DEFAULT_MAX_PIXELS:,})',
    )
    parser.set_defaults(func=run)


def shard_argument(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def list_inputs(source: Path) -> List[Path]:
    from hat_basicsr.utils.image_io import IMAGE_SUFFIXES

    if source.is_file():
        return [source]
    if not source.is_dir():
        raise SourceError(f'input not found: {source}')
    images = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SourceError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in folder {source}')
    return images


def make_runner(
    model: Union[nn.Module, OnnxModel], scale: int, device: torch.device, tile: int, tile_overlap: int, bf16: bool
) -> Runner:
    """An HxWxC float array -> (H*scale)x(W*scale)xC, through the model on `device`."""
    import numpy as np
    import torch

    from hat_basicsr.archs.acceleration import bf16_inference
    from hat_basicsr.utils.tiling import tiled_forward

    forward = bf16_inference(model, device, bf16)

    def run_model(image: np.ndarray) -> np.ndarray:
        lq = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)
        with torch.inference_mode():
            sr = tiled_forward(forward, lq, scale, tile, tile_overlap) if tile else forward(lq)
            if not torch.isfinite(sr).all():
                raise ValueError('the model output holds NaN or infinite values; nothing written')
            return sr[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()

    return run_model


def upscale_planes(image: np.ndarray, model_channels: int, run_model: Runner) -> np.ndarray:
    """Upscale a gray (HxWx1) or RGB (HxWx3) image with a 1- or 3-channel model (see module doc)."""
    from hat_basicsr.cli.colour import as_rgb, upscale_luma

    channels = image.shape[2]
    if channels == model_channels == 3:
        return run_model(image)
    if channels == 1 and model_channels == 3:
        return run_model(as_rgb(image)).mean(axis=2, keepdims=True)
    if model_channels == 1:
        return upscale_luma(image, run_model)
    raise ImageError(f'a {model_channels}-channel model cannot process {channels}-channel images')


def upscale_alpha(alpha: np.ndarray, model_channels: int, scale: int, run_model: Runner, mode: str) -> np.ndarray:
    import cv2
    import numpy as np

    height, width = alpha.shape[0] * scale, alpha.shape[1] * scale
    if alpha.min() == alpha.max():
        return np.full((height, width), alpha.flat[0], dtype=np.float32)
    if mode == 'bicubic':
        return np.clip(cv2.resize(alpha, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)
    return upscale_planes(alpha[..., None], model_channels, run_model)[..., 0]


def output_path(args: argparse.Namespace, source: Path) -> Path:
    return args.output / f'{source.stem}{args.suffix}{source.suffix}'


def process(
    source: Path, target: Path, model_channels: int, scale: int, run_model: Runner, alpha_mode: str, max_pixels: int
) -> None:
    from hat_basicsr.utils.image_io import read_image, write_image

    if target.resolve() == source.resolve():
        raise ImageError(f'{source}: output would overwrite the input (choose another folder or a --suffix)')
    image, alpha, bit_depth = read_image(source, max_pixels)
    result = upscale_planes(image, model_channels, run_model)
    if alpha is not None:
        alpha = upscale_alpha(alpha, model_channels, scale, run_model, alpha_mode)
    write_image(target, result, bit_depth, alpha)


def check_suffix(suffix: str) -> None:
    if '/' in suffix or os.sep in suffix:
        raise SourceError(f'--suffix {suffix!r} contains a path separator; outputs go into the output folder')


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hat_basicsr.cli.model_source import ModelSpec, instantiate, model_channels, resolve_device, resolve_source
    from hat_basicsr.utils.image_io import silence_opencv
    from hat_basicsr.utils.onnx_deploy import OnnxModel
    from hat_basicsr.utils.tiling import off_grid_warning

    try:
        launcher = Shard.from_launcher()
    except ValueError as error:
        return report_error('upscale', error)
    if (args.tile or 0) < 0 or (args.tile_overlap or 0) < 0:
        raise SourceError('--tile and --tile-overlap must be >= 0')
    if args.max_pixels < 1:
        raise SourceError(f'--max-pixels must be positive, got {args.max_pixels}')
    check_suffix(args.suffix)
    inputs = args.shard.within(launcher).select(list_inputs(args.input))
    ensure_writable_folder(args.output)
    remove_stale_temporaries(args.output, {output_path(args, source).name for source in inputs})
    device = resolve_device(args.device, local_rank() if launcher.count > 1 else None)
    if args.backend == 'onnxruntime':
        if args.bf16:
            raise SourceError('--bf16 applies to the torch backend only (an ONNX file has its own precision)')
        model = OnnxModel.load(args.model, device, cpu_fallback=args.device == 'auto')
        spec = ModelSpec(network={}, scale=model.scale, weights=None)
    else:
        spec = resolve_source(args.model, args.param_key)
        model = instantiate(spec, args.model, device)
    if args.tile is None:
        tile = spec.tile.tile_size if spec.tile else 0
    else:
        tile = args.tile
    if args.tile_overlap is None:
        overlap = spec.tile.tile_pad if spec.tile else DEFAULT_TILE_PAD
    else:
        overlap = args.tile_overlap
    warning = off_grid_warning(tile, overlap, getattr(model, 'window_size', None)) if tile else None
    if warning:
        tqdm.write(f'hat-basicsr upscale: warning: {warning}', file=sys.stderr)
    channels = model_channels(model)
    run_model = make_runner(model, spec.scale, device, tile, overlap, args.bf16)
    silence_opencv()
    failed: List[Path] = []
    skipped = 0
    for source in tqdm(inputs, desc='upscale', unit='image', disable=launcher.index != 0):
        target = output_path(args, source)
        if args.skip_existing and target.exists():
            skipped += 1
            continue
        try:
            process(source, target, channels, spec.scale, run_model, args.alpha, args.max_pixels)
        except (RuntimeError, ValueError, MemoryError) as error:  # this image fails; the others go on
            failed.append(source)
            # An image that cannot be read or written is named by its error; the model's failures are not.
            about = '' if isinstance(error, (ImageError, OutputError)) else f'{source}: '
            tqdm.write(f'hat-basicsr upscale: failed: {about}{error}', file=sys.stderr)
    done, skipped, failures = sum_over_ranks([len(inputs) - len(failed) - skipped, skipped, len(failed)], launcher)
    if launcher.index == 0:
        job = f' (all {launcher.count} ranks)' if launcher.count > 1 else ''
        tqdm.write(f'{done} written, {skipped} skipped (existing), {failures} failed{job} -> {args.output}')
    return 1 if failures else 0

"""`hat-basicsr lam`: Local Attribution Map and Diffusion Index of an SR model for one output patch.

The box is given in OUTPUT (SR) pixels: --box X Y is the top-left corner of a --size x --size
patch of the super-resolved image (as in the LAM paper); the panel draws it on the input at
box / scale. The model is a HAT checkpoint (options read from its weights) or a BasicSR option
file for any registered architecture (EDSR, RCAN, SwinIR, HAT, ...); an option file without
weights studies the randomly initialised network. Prints the Diffusion Index and writes a PNG
panel: input with the box, LAM heatmap over the input, and the SR patch.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Tuple, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from hat_basicsr.analysis.lam import (
    DEFAULT_BOX_SIZE,
    DEFAULT_SIGMA,
    DEFAULT_STEPS,
    Box,
    check_box,
    local_attribution_map,
    save_lam_panel,
)
from hat_basicsr.analysis.visual import check_image_writer
from hat_basicsr.cli.common import as_rgb, load_model, luma, read_image, report_error, resolve_device, silence_opencv
from hat_basicsr.cli.upscale import model_channels
from hat_basicsr.errors import BoxError, CheckpointError, ImageError, OutputError, SourceError

Number = TypeVar('Number', int, float)
# What a user can get wrong on the command line: reported in one line with exit status 2.
USER_ERRORS = (SourceError, CheckpointError, ImageError, BoxError, OutputError)


def checked(cast: Callable[[str], Number], valid: Callable[[Number], bool], requirement: str
            ) -> Callable[[str], Number]:
    """An argparse type: `cast`, then refuse values that are not `valid` (argparse reports it, status 2)."""

    def parse(text: str) -> Number:
        value = cast(text)
        if not valid(value):
            raise argparse.ArgumentTypeError(f'{requirement}, got {text}')
        return value

    parse.__name__ = cast.__name__  # argparse names the type in its "invalid int value" message
    return parse


def positive(cast: Callable[[str], Number]) -> Callable[[str], Number]:
    return checked(cast, lambda value: value > 0, 'must be positive')


def non_negative(cast: Callable[[str], Number]) -> Callable[[str], Number]:
    return checked(cast, lambda value: value >= 0, 'must be >= 0')


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Image, model and device arguments shared by the analysis subcommands."""
    parser.add_argument('image', type=Path, help='input (low-resolution) image')
    parser.add_argument('-m', '--model', required=True,
                        help='HAT checkpoint (.pth/.safetensors) or BasicSR option file (.yml) of any architecture')
    parser.add_argument('-o', '--output', type=Path, required=True, help='PNG file to write')
    parser.add_argument('--device', default='auto', help="'auto' (CUDA if available), 'cpu', 'cuda:1', ...")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser('lam', help='Local Attribution Map and Diffusion Index of an SR model',
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument('--box', type=int, nargs=2, metavar=('X', 'Y'), required=True,
                        help='top-left corner of the target patch, in SR-output pixels')
    parser.add_argument('--size', type=positive(int), default=DEFAULT_BOX_SIZE,
                        help=f'side of the target patch in SR pixels (default {DEFAULT_BOX_SIZE})')
    parser.add_argument('--steps', type=positive(int), default=DEFAULT_STEPS,
                        help=f'path-integration steps (default {DEFAULT_STEPS})')
    parser.add_argument('--sigma', type=positive(float), default=DEFAULT_SIGMA,
                        help=f'Gaussian sigma of the baseline blur, in input pixels (default {DEFAULT_SIGMA})')
    parser.add_argument('--batch', type=positive(int), default=8,
                        help='path points per forward/backward pass: bounds memory (default 8)')
    parser.set_defaults(func=run)


def model_input(image: np.ndarray, channels: int) -> Tensor:
    """HxWxC float image -> (channels, H, W) tensor: gray is replicated for RGB models; 1-channel
    models get luminance as BasicSR's `color: y` datasets compute it."""
    if image.shape[2] == 1 and channels == 3:
        image = as_rgb(image)
    elif channels == 1:
        image = luma(image)
    elif image.shape[2] != channels:
        raise ImageError(f'a {channels}-channel model cannot analyse {image.shape[2]}-channel images')
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def load_inputs(args: argparse.Namespace) -> Tuple[nn.Module, int, Tensor, torch.device]:
    """(model, scale, input tensor, device) from the shared arguments; raises one of USER_ERRORS.
    The output file's format is checked first, so a bad name fails before the computation."""
    check_image_writer(args.output)
    device = resolve_device(args.device)
    model, scale = load_model(args.model, device, allow_random_init=True)
    silence_opencv()
    image, _, _ = read_image(args.image)
    return model, scale, model_input(image, model_channels(model)), device


def run(args: argparse.Namespace) -> int:
    try:
        model, scale, image, device = load_inputs(args)
        box = Box(*args.box, args.size)
        check_box(box, image.shape[-2] * scale, image.shape[-1] * scale)
        result = local_attribution_map(model, image, box, sigma=args.sigma, steps=args.steps, batch=args.batch,
                                       device=device)
        path = save_lam_panel(result, args.output)
    except USER_ERRORS as error:
        return report_error('lam', error)
    gap = result.attribution.completeness_gap
    print(f'DI {result.diffusion_index:.2f}  (box x={box.x} y={box.y} size={box.size} in SR pixels, x{scale}; '
          f'completeness gap {gap:.2%})')
    print(f'wrote {path}')
    return 0

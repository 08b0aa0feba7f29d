"""What the analysis subcommands (lam, features) share: loading the model and the image into a
tensor the model takes (their arguments are in arguments.py)."""

from __future__ import annotations

import argparse
from typing import Tuple

import numpy as np
import torch
from torch import Tensor, nn

from hat_basicsr.analysis.visual import check_image_writer
from hat_basicsr.cli.colour import as_rgb, luma
from hat_basicsr.cli.model_source import load_model, model_channels, resolve_device
from hat_basicsr.errors import ImageError
from hat_basicsr.utils.image_io import read_image, silence_opencv

# What a user can get wrong on the command line: reported in one line with exit status 2.


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
    """(model, scale, input tensor, device) from the shared arguments; raises a UserError.
    The output file's format is checked first, so a bad name fails before the computation."""
    check_image_writer(args.output)
    device = resolve_device(args.device)
    model, scale = load_model(args.model, device, allow_random_init=True)
    silence_opencv()
    image, _, _ = read_image(args.image)
    return model, scale, model_input(image, model_channels(model)), device

"""Colour layouts between images and models: gray and RGB images, 1-channel (luminance) models."""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from basicsr.utils.color_util import rgb2ycbcr, ycbcr2rgb


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

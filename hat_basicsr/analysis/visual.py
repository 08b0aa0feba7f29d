"""Rendering helpers shared by the LAM panel and the feature grid.

Arrays handed around here are RGB uint8 (H, W, 3), written by utils/image_io.write_samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from torch import Tensor

from hat_basicsr.errors import OutputError
from hat_basicsr.utils.image_io import write_samples

GAP = 4
HEADER = 20
WHITE = 255


def check_image_writer(path: Union[str, Path]) -> None:
    """An OutputError unless OpenCV can encode an image under this file name's extension."""
    if not Path(path).suffix or not cv2.haveImageWriter(str(path)):
        raise OutputError(f'{path}: OpenCV cannot write images with this extension (use .png)')


def write_png(path: Union[str, Path], rgb: np.ndarray) -> Path:
    """Write an RGB uint8 array atomically (creating the folder)."""
    check_image_writer(path)
    write_samples(path, rgb)
    return Path(path)


def to_uint8(image: Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W, 3) uint8 RGB (grey images are repeated to 3 channels)."""
    array = image.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def colorize(
    values: np.ndarray, low: Optional[float] = None, high: Optional[float] = None, colormap: int = cv2.COLORMAP_JET
) -> np.ndarray:
    """A 2-D array as an RGB uint8 heatmap, low..high (default: its min..max) over the full colormap.

    An empty range (a flat array) maps everything to the lowest colour.
    """
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else high
    norm = np.clip((values - low) / (high - low), 0, 1) if high > low else np.zeros_like(values, dtype=np.float64)
    bgr = cv2.applyColorMap((norm * 255).round().astype(np.uint8), colormap)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def resize(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resize to (height, width): nearest when enlarging (pixels stay visible), area when shrinking."""
    height, width = size
    shrink = height < image.shape[0] or width < image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)


def labelled(tile: np.ndarray, label: str) -> np.ndarray:
    """A tile with a white header strip of HEADER pixels carrying its label."""
    header = np.full((HEADER, tile.shape[1], 3), WHITE, np.uint8)
    cv2.putText(header, label, (3, HEADER - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([header, tile], axis=0)


def stack(tiles: Sequence[np.ndarray], axis: int, gap: int = GAP) -> np.ndarray:
    """Tiles side by side (axis=1, equal heights) or one above the other (axis=0, equal widths), with
    white gaps between them."""
    spacer_shape = list(tiles[0].shape)
    spacer_shape[axis] = gap
    spacer = np.full(spacer_shape, WHITE, np.uint8)
    parts = [part for tile in tiles for part in (tile, spacer)][:-1]
    return np.concatenate(parts, axis=axis)

"""Reading and writing images (the subcommands, the analysis panels): exact samples (8 or 16 bits),
EXIF orientation, alpha, a pixel limit checked before decoding, atomic writes; and the image file
suffixes that datasets, the option checker and `upscale` look for in a folder."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Optional, Tuple, Union

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from hat_basicsr.errors import ImageError
from hat_basicsr.utils.defaults import DEFAULT_MAX_PIXELS
from hat_basicsr.utils.files import atomic_write

# What counts as an image in a folder: training data, the option checker's look at dataroots, upscale's inputs.
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm')
HIGH_DEPTH_SUFFIXES = ('.png', '.tif', '.tiff', '.ppm')
ENCODE_PARAMS = {'.jpg': [cv2.IMWRITE_JPEG_QUALITY, 95], '.jpeg': [cv2.IMWRITE_JPEG_QUALITY, 95]}
SAMPLE_MAX = {np.dtype(np.uint8): (8, 255.0), np.dtype(np.uint16): (16, 65535.0)}
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PNG_GRAY_ALPHA = 4  # the IHDR colour type of gray+alpha, byte 25 of the file
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


def read_image(
    path: Union[str, os.PathLike], max_pixels: int = DEFAULT_MAX_PIXELS
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
    gray = channels <= 2 or is_gray_alpha_png(data)  # OpenCV decodes gray+alpha PNG as BGRA with B = G = R
    color = image[..., :1] if gray else image[..., :3][..., ::-1]
    return np.ascontiguousarray(color), alpha, bit_depth


def is_gray_alpha_png(data: np.ndarray) -> bool:
    """Whether the encoded bytes are a PNG whose header declares gray+alpha samples."""
    head = data[:26].tobytes()
    return len(head) == 26 and head.startswith(PNG_SIGNATURE) and head[12:16] == b'IHDR' and head[25] == PNG_GRAY_ALPHA


def encode_gray_alpha_png(samples: np.ndarray) -> bytes:
    """A PNG of gray+alpha samples (HxWx2, uint8 or uint16). OpenCV writes only 1, 3 or 4 channels
    and PIL has no 16-bit gray+alpha mode, so the file is written here: the signature, an IHDR of
    colour type 4, one zlib stream of the rows (each after filter byte 0, samples big-endian), IEND."""
    height, width, _ = samples.shape
    bit_depth = 8 * samples.dtype.itemsize
    rows = samples.astype(samples.dtype.newbyteorder('>')).reshape(height, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))

    header = struct.pack('>IIBBBBB', width, height, bit_depth, PNG_GRAY_ALPHA, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b'')


def silence_opencv() -> None:
    """Our one-line reports replace OpenCV's own log lines about files it cannot decode."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def check_pixels(path: Union[str, os.PathLike], width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(
            f'{path}: {width}x{height} is {width * height:,} pixels, more than the limit of '
            f'{max_pixels:,} (--max-pixels)'
        )


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


def write_image(
    path: Union[str, os.PathLike], array: np.ndarray, bit_depth: int = 8, alpha: Optional[np.ndarray] = None
) -> None:
    """Write float RGB (HxWx3) or gray (HxW or HxWx1) in [0, 1], with optional alpha, atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if bit_depth not in (8, 16):
        raise ImageError(f'{path}: bit depth {bit_depth} is not supported (8 or 16)')
    if bit_depth == 16 and suffix not in HIGH_DEPTH_SUFFIXES:
        raise ImageError(f'{path}: {suffix} cannot hold 16-bit samples (use {", ".join(HIGH_DEPTH_SUFFIXES)})')
    planes = [array if array.ndim == 3 else array[..., None]]
    if alpha is not None:
        planes.append(alpha[..., None])
    dtype, peak = (np.uint8, 255.0) if bit_depth == 8 else (np.uint16, 65535.0)
    write_samples(path, np.rint(np.clip(np.concatenate(planes, axis=2), 0, 1) * peak).astype(dtype))


def write_samples(path: Union[str, os.PathLike], samples: np.ndarray) -> None:
    """Write uint8 or uint16 samples (HxWxC: gray, gray+alpha, RGB or RGBA) atomically, in the
    format of the file name's suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if samples.shape[2] == 2 and suffix == '.png':
        encoded = encode_gray_alpha_png(samples)
        atomic_write(path, lambda stream: stream.write(encoded))
        return
    if samples.shape[2] == 2:  # OpenCV's encoders: as BGRA
        samples = samples[..., [0, 0, 0, 1]]
    if samples.shape[2] >= 3:
        samples = np.concatenate([samples[..., 2::-1], samples[..., 3:]], axis=2)
    image = samples[..., 0] if samples.shape[2] == 1 else samples
    try:
        ok, encoded = cv2.imencode(suffix, image, ENCODE_PARAMS.get(suffix, []))
    except cv2.error as error:
        raise ImageError(f'{path}: cannot encode as {suffix} ({error})') from error
    if not ok:
        raise ImageError(f'{path}: cannot encode as {suffix}')
    atomic_write(path, lambda stream: stream.write(encoded.tobytes()))

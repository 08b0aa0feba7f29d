"""Samples/s of ImageNetPairedDataset's LQ synthesis: whole-image imresize then crop (the release)
versus imresize on a window around the crop (hat_basicsr), and the largest difference between them.

Run: .venv/bin/python benchmarks/bench_imagenet_lq.py  (updates its section of RESULTS_data.md)
"""

import hat_basicsr  # noqa: F401  (first: applies the entry points' thread policy before torch loads)

# isort: split
import argparse
import datetime
import os
import platform
import random
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import cv2
import numpy as np
import torch
from report import cpu_model, replace_section

from hat_basicsr.data.imagenet_paired_dataset import crop_pair

from basicsr.data.transforms import paired_random_crop
from basicsr.utils.matlab_functions import imresize

RESULTS = Path(__file__).with_name('RESULTS_data.md')
BEGIN, END = '<!-- bench_imagenet_lq: begin -->', '<!-- bench_imagenet_lq: end -->'


def synthetic_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random image (bicubic-upsampled noise), HWC float32 in [0, 1]; content does not affect speed."""
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 8 + 2, width // 8 + 2, 3)).astype(np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255


def whole_image(img: np.ndarray, scale: int, gt_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """The release: LQ of the whole image, then a paired random crop."""
    return paired_random_crop(img, imresize(img, 1 / scale), gt_size, scale)


def windowed(img: np.ndarray, scale: int, gt_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """hat_basicsr: draw the LR position the same way, compute the LQ on a window around it."""
    lq_size = gt_size // scale
    top = random.randint(0, img.shape[0] // scale - lq_size)
    left = random.randint(0, img.shape[1] // scale - lq_size)
    return crop_pair(img, scale, top, left, lq_size)


def rate(fn: Callable, img: np.ndarray, scale: int, gt_size: int, min_seconds: float) -> float:
    """Samples per second, running at least twice and at least min_seconds."""
    count, start = 0, time.perf_counter()
    while count < 2 or time.perf_counter() - start < min_seconds:
        fn(img, scale, gt_size)
        count += 1
    return count / (time.perf_counter() - start)


def to_byte(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img * 255, 0, 255))


def max_difference(img: np.ndarray, scale: int, gt_size: int, trials: int) -> Tuple[float, float]:
    """Largest float and 8-bit difference between the two methods at the same random positions."""
    float_diff = byte_diff = 0.0
    for seed in range(trials):
        random.seed(seed)
        _, lq_whole = whole_image(img, scale, gt_size)
        random.seed(seed)
        _, lq_window = windowed(img, scale, gt_size)
        float_diff = max(float_diff, float(np.abs(lq_whole - lq_window).max()))
        byte_diff = max(byte_diff, float(np.abs(to_byte(lq_whole) - to_byte(lq_window)).max()))
    return float_diff, byte_diff


def machine() -> str:
    return (
        f'{cpu_model()}, {len(os.sched_getaffinity(0))} cores (load average {os.getloadavg()[0]:.1f} at the end), '
        f'{torch.get_num_threads()} torch thread (as in a DataLoader worker), Python {platform.python_version()}, '
        f'torch {torch.__version__}, numpy {np.__version__}'
    )


def write_section(rows: List[Dict], scale: int, gt_size: int) -> None:
    lines = [
        '## ImageNetPairedDataset: LQ synthesis speed',
        '',
        f'`benchmarks/bench_imagenet_lq.py`, {datetime.date.today().isoformat()}; {machine()}.',
        f'Scale {scale}, gt_size {gt_size}; time for LQ synthesis and crop only (no file reading). '
        'Max diff: between the two methods at the same random positions.',
        '',
        '| GT image | whole-image LQ (release) | windowed LQ (hat_basicsr) | speed-up | max diff float / 8-bit |',
        '|---|---|---|---|---|',
    ]
    for row in rows:
        lines.append(
            f'| {row["size"]} | {row["whole"]:.2f} samples/s | {row["window"]:.1f} samples/s | '
            f'{row["window"] / row["whole"]:.1f}x | {row["float_diff"]:.2g} / {row["byte_diff"]:.0f} |'
        )
    replace_section(RESULTS, BEGIN, END, '\n'.join(lines), '# Data pipeline benchmarks')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--gt-size', type=int, default=256)
    parser.add_argument('--seconds', type=float, default=5.0, help='minimum time per measurement')
    parser.add_argument('--trials', type=int, default=5, help='random positions compared between methods')
    args = parser.parse_args()
    # A DataLoader worker runs torch with one thread; measure the synthesis as a worker runs it.
    torch.set_num_threads(1)
    rows = []
    for width, height in ((500, 375), (2000, 1500)):
        img = synthetic_photo(height - height % args.scale, width - width % args.scale)
        row = {
            'size': f'{width}x{height}',
            'whole': rate(whole_image, img, args.scale, args.gt_size, args.seconds),
            'window': rate(windowed, img, args.scale, args.gt_size, args.seconds),
        }
        row['float_diff'], row['byte_diff'] = max_difference(img, args.scale, args.gt_size, args.trials)
        print(row)
        rows.append(row)
    write_section(rows, args.scale, args.gt_size)
    print(f'wrote {RESULTS}')


if __name__ == '__main__':
    main()

"""The demo: build the demo data if missing, train a tiny HAT on it with the training entry point,
then compare its final EMA weights with bicubic upsampling on the demo validation images.

    python -m hat_basicsr.demo [--opt options/train/demo/HAT-tiny_SRx2_demo.yml]

Exits non-zero when HAT does not beat bicubic.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch

from hat_basicsr import train
from hat_basicsr.data.demo_data import build_demo_data
from hat_basicsr.errors import UserError
from hat_basicsr.utils.option_yaml import read_option_yaml
from hat_basicsr.utils.weights import load_weights

DEFAULT_OPT = 'options/train/demo/HAT-tiny_SRx2_demo.yml'
DEMO_ROOT = 'datasets/demo'


def read_image(path: str) -> np.ndarray:
    """BGR float32 in [0, 1]; a missing or undecodable file is named in the error."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f'cannot read image {path}')
    return image.astype(np.float32) / 255.0


def evaluate(opt: Dict, weights: str) -> List[Tuple[str, float, float]]:
    """(image name, bicubic PSNR, HAT PSNR) per validation image: Y channel, crop_border = scale,
    bicubic = BasicSR's MATLAB-style imresize of the same LR image HAT sees."""
    from basicsr.archs import build_network
    from basicsr.data.data_util import paired_paths_from_folder
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import img2tensor, tensor2img
    from basicsr.utils.matlab_functions import imresize

    scale = opt['scale']
    val = opt['datasets']['val']
    device = torch.device('cuda' if torch.cuda.is_available() and opt.get('num_gpu') != 0 else 'cpu')
    net = build_network(opt['network_g'])
    load_weights(net, weights)  # params_ema when the run used EMA
    net.to(device).eval()
    pairs = paired_paths_from_folder(
        [val['dataroot_lq'], val['dataroot_gt']], ['lq', 'gt'], val.get('filename_tmpl', '{}')
    )
    rows = []
    for pair in sorted(pairs, key=lambda item: item['gt_path']):
        lq = read_image(pair['lq_path'])
        gt = tensor2img(img2tensor(read_image(pair['gt_path'])))[: lq.shape[0] * scale, : lq.shape[1] * scale]
        with torch.no_grad():
            sr = tensor2img(net(img2tensor(lq).unsqueeze(0).to(device)).cpu())
        bicubic = tensor2img(img2tensor(imresize(lq, scale)))
        rows.append(
            (
                os.path.basename(pair['gt_path']),
                calculate_psnr(bicubic, gt, crop_border=scale, test_y_channel=True),
                calculate_psnr(sr, gt, crop_border=scale, test_y_channel=True),
            )
        )
    return rows


def report(rows: List[Tuple[str, float, float]], scale: int) -> float:
    """Print the comparison table; returns HAT's mean gain over bicubic in dB."""
    width = max(len('mean'), *(len(name) for name, _, _ in rows))
    print(f'\nPSNR (dB, Y channel, crop border {scale}) on the demo validation images, x{scale}:')
    print(f'{"image":<{width}}  {"bicubic":>8}  {"HAT":>8}')
    for name, bicubic, hat in rows:
        print(f'{name:<{width}}  {bicubic:8.2f}  {hat:8.2f}')
    bicubic_mean = float(np.mean([row[1] for row in rows]))
    hat_mean = float(np.mean([row[2] for row in rows]))
    print(f'{"mean":<{width}}  {bicubic_mean:8.2f}  {hat_mean:8.2f}')
    return hat_mean - bicubic_mean


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='hat_basicsr.demo', description=__doc__.split('\n\n')[0])
    parser.add_argument('--opt', default=DEFAULT_OPT, help=f'training options (default: {DEFAULT_OPT})')
    args = parser.parse_args(argv)
    if not os.path.isfile(args.opt):
        parser.error(f'option file not found: {args.opt} (run from the repository root or pass --opt)')
    try:
        opt = read_option_yaml(args.opt)
    except UserError as error:
        parser.exit(2, f'{parser.prog}: error: {error}\n')

    started = time.time()
    build_demo_data(DEMO_ROOT)
    train.main(['-opt', args.opt])
    trained = time.time()
    weights = os.path.join('experiments', opt['name'], 'models', 'net_g_latest.pth')
    gain = report(evaluate(opt, weights), opt['scale'])
    print(f'(data + training {trained - started:.0f} s, evaluation {time.time() - trained:.0f} s; weights: {weights})')
    if gain <= 0:
        print(f'HAT does NOT beat bicubic: {gain:+.2f} dB', file=sys.stderr)
        return 1
    print(f'HAT beats bicubic by {gain:.2f} dB')
    return 0


if __name__ == '__main__':
    sys.exit(main())

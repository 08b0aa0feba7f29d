"""GT-only dataset that synthesises its LQ with MATLAB-style bicubic, as HAT's ImageNet pretraining does.

The release computes `imresize(gt, 1/scale)` on the whole image and then crops: on ImageNet-size
images most of that work is thrown away. Here the LQ is computed on a GT window just large enough
that the LQ crop is identical to cropping the whole-image LQ (see `lq_window` and `crop_pair`).
"""

import math
import os
import random
from typing import ClassVar, Dict, List, Optional, Tuple

import cv2
import numpy as np
from torch.utils import data
from torchvision.transforms.functional import normalize

from hat_basicsr.errors import DatasetError, ImageError
from hat_basicsr.utils.image_io import IMAGE_SUFFIXES
from hat_basicsr.utils.option_spec import Option, Section
from hat_basicsr.utils.registration import register_once

from basicsr.data.data_util import paths_from_lmdb
from basicsr.data.transforms import augment, mod_crop
from basicsr.utils import FileClient, bgr2ycbcr, get_root_logger, imfrombytes, img2tensor, scandir
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import DATASET_REGISTRY

# MATLAB's bicubic kernel has support 2 input pixels; antialiased at 1/s it is stretched to 2s HR
# pixels on each side of an LR pixel's centre, i.e. 1.5s + 0.5 HR pixels beyond that LR pixel's own
# s-pixel block: ceil((1.5s + 0.5) / s) = 2 LR pixels for every integer scale s >= 1.
KERNEL_REACH_LR = 2

# basicsr's imresize reduces each LR row with a BLAS gemv whose rounding (1 ulp) depends on the row
# length left after the kernel's first tap and on how the rows fall into the BLAS's row blocks. A
# window whose edges lie a multiple of this many LR pixels (16*s HR pixels) from the image's own
# edges, and whose far edge lies this much beyond the crop (or on the image border), reproduces both,
# so its arithmetic is bit-identical to the whole image's (16 covers 4-, 8- and 16-float SIMD paths).
LAYOUT_BLOCK_LR = 16

# How many other samples `skip_corrupt` tries before giving up on the dataset.
MAX_SKIPPED_READS = 50


def gt_image_paths(gt_folder: str, list_file: Optional[str]) -> List[str]:
    """The images of a disk dataset: those `list_file` names (one path relative to `gt_folder` per
    line, anything after a space ignored), or without a list every image under `gt_folder`,
    subfolders included (ImageNet keeps one per class)."""
    if list_file:
        with open(list_file) as fin:
            names = [line.split()[0] for line in fin if line.strip()]
        return [os.path.join(gt_folder, name) for name in names]
    if not os.path.isdir(gt_folder):
        raise DatasetError(f'dataroot_gt {gt_folder} is not a folder.')
    names = (p for p in scandir(gt_folder, recursive=True) if p.lower().endswith(IMAGE_SUFFIXES))
    return [os.path.join(gt_folder, name) for name in sorted(names)]


def lq_window(start: int, size: int, length: int) -> Tuple[int, int]:
    """LR-pixel range [lo, hi) to resize so that LR pixels [start, start + size) come out exactly.

    The range reaches KERNEL_REACH_LR pixels beyond the crop (or to the true image border, where
    imresize's symmetric padding then matches the whole image's) and is widened as LAYOUT_BLOCK_LR
    describes.
    """
    if not 0 <= start <= length - size:
        raise ValueError(f'LQ crop [{start}, {start + size}) does not fit in {length} LR pixels.')
    lo = max(start - KERNEL_REACH_LR, 0)
    lo -= lo % LAYOUT_BLOCK_LR
    tail = max(length - (start + size + KERNEL_REACH_LR + LAYOUT_BLOCK_LR), 0)
    hi = length - (tail - tail % LAYOUT_BLOCK_LR)
    return lo, hi


def crop_pair(img_gt: np.ndarray, scale: int, top: int, left: int, lq_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """GT crop and its LQ, equal to cropping `imresize(img_gt, 1/scale)` at LR (top, left).

    `img_gt` is HWC float in [0, 1] with sides that are multiples of `scale`. The LQ is the raw
    float imresize output (not rounded).
    """
    h_lq, w_lq = img_gt.shape[0] // scale, img_gt.shape[1] // scale
    row_lo, row_hi = lq_window(top, lq_size, h_lq)
    col_lo, col_hi = lq_window(left, lq_size, w_lq)
    window = img_gt[row_lo * scale : row_hi * scale, col_lo * scale : col_hi * scale]
    lq = imresize(window, 1 / scale)
    lq = lq[top - row_lo : top - row_lo + lq_size, left - col_lo : left - col_lo + lq_size]
    gt_size = lq_size * scale
    gt = img_gt[top * scale : top * scale + gt_size, left * scale : left * scale + gt_size]
    return gt, lq


def quantize(img: np.ndarray) -> np.ndarray:
    """Round to 8 bits, as LR images saved to PNG (DF2K, benchmarks) are: train and test LQ match."""
    return (np.round(np.clip(img * 255.0, 0, 255)) / 255.0).astype(np.float32)


def enlarge_to_fit(img: np.ndarray, min_side: int) -> np.ndarray:
    """Bicubic upscale (aspect kept) so that both sides are at least `min_side`; no-op if they are."""
    h, w = img.shape[:2]
    if min(h, w) >= min_side:
        return img
    factor = min_side / min(h, w)
    new_h, new_w = max(min_side, math.ceil(h * factor)), max(min_side, math.ceil(w * factor))
    return np.clip(cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_CUBIC), 0, 1)


@register_once(DATASET_REGISTRY)
class ImageNetPairedDataset(data.Dataset):
    """GT images only; LQ = MATLAB-style bicubic `imresize(gt, 1/scale)`, rounded to 8 bits.

    Options (besides BasicSR's loader keys):
        dataroot_gt (str): image folder (scanned recursively, sorted), or an LMDB made by
            basicsr's `make_lmdb_from_imgs` when `io_backend.type` is `lmdb`.
        meta_info (str, optional): list file, one path relative to dataroot_gt per line (first
            whitespace-separated token); disk backend only. `meta_info_file` (the key of the
            release's option files and of BasicSR's PairedImageDataset) is read the same way.
        dataroot_lq: ignored (the release's files set it to dataroot_gt); the LQ is computed.
        io_backend (dict): `{type: disk}` or `{type: lmdb}`.
        scale (int), phase (str): filled in by BasicSR.
        gt_size (int): training GT patch size, a multiple of scale.
        use_hflip, use_rot (bool): flips and 90-degree rotations (training).
        color (str, optional): 'y' for the Y channel only.
        mean, std (list, optional): normalisation, as in PairedImageDataset.
        skip_corrupt (bool): in training, on an unreadable image, log a warning naming it and
            return another random sample instead of raising. Default False. Validation and test
            always raise: a substitute would be scored twice and change between validations.

    Training: modcrop to scale; an image with a side shorter than gt_size is first enlarged
    (bicubic, aspect kept, shorter side = gt_size); an LR position is drawn uniformly as
    `paired_random_crop` does on the whole image, and the LQ patch is computed on a small window
    around it (identical to the whole-image LQ). Other phases: the whole modcropped GT and its
    whole-image LQ, so the dataset can serve validation.
    """

    OPTIONS: ClassVar[Section] = Section(
        (
            Option('dataroot_gt', 'string', 'Image folder (scanned recursively), or an LMDB.', required=True),
            Option('dataroot_lq', ('string', 'null'), 'Ignored: the LQ is computed from the GT.'),
            Option('meta_info', ('string', 'null'), 'List file, one path relative to dataroot_gt per line.'),
            Option('meta_info_file', ('string', 'null'), 'The same list file, under the release key.'),
            Option(
                'gt_size',
                'integer',
                'Training GT patch size, a multiple of scale; needed in training.',
                minimum=1,
                expected_text='a positive integer multiple of scale (the GT patch size)',
            ),
            Option('use_hflip', 'boolean', 'Random horizontal flips (training).'),
            Option('use_rot', 'boolean', 'Random 90-degree rotations (training).'),
            Option('color', ('string', 'null'), "'y' for the Y channel only."),
            Option('mean', ('numbers', 'null'), 'Normalisation mean per channel.'),
            Option('std', ('numbers', 'null'), 'Normalisation std per channel.'),
            Option('skip_corrupt', 'boolean', 'In training, replace an unreadable image by another sample.'),
        ),
        doc="ImageNetPairedDataset's own keys (BasicSR's loader keys are declared with every dataset's).",
        closed=False,
    )

    def __init__(self, opt: Dict):
        super().__init__()
        self.opt = opt
        lists = {opt[key] for key in ('meta_info', 'meta_info_file') if opt.get(key)}
        if len(lists) > 1:
            raise DatasetError(f'meta_info and meta_info_file name different list files {sorted(lists)}; give one.')
        self.meta_info = lists.pop() if lists else None
        self.scale = int(opt['scale'])
        self.is_train = opt['phase'] == 'train'
        if self.is_train and opt['gt_size'] % self.scale:
            raise DatasetError(f'gt_size {opt["gt_size"]} must be a multiple of scale {self.scale}.')
        self.mean = opt.get('mean')
        self.std = opt.get('std')
        self.skip_corrupt = bool(opt.get('skip_corrupt', False))
        self.io_backend_opt = dict(opt['io_backend'])
        self.file_client: Optional[FileClient] = None
        self.gt_folder = str(opt['dataroot_gt'])
        self.paths = self._list_paths()
        if not self.paths:
            raise DatasetError(f'ImageNetPairedDataset found no images under {self.gt_folder}.')

    def _list_paths(self) -> List[str]:
        if self.io_backend_opt['type'] == 'lmdb':
            if self.meta_info:
                raise DatasetError(
                    "Option 'meta_info' applies to the disk backend; an LMDB lists its keys in its own meta_info.txt."
                )
            self.io_backend_opt['db_paths'] = [self.gt_folder]
            self.io_backend_opt['client_keys'] = ['gt']
            return paths_from_lmdb(self.gt_folder)
        return gt_image_paths(self.gt_folder, self.meta_info)

    def _read_gt(self, gt_path: str) -> np.ndarray:
        """HWC BGR float32 image in [0, 1]; ImageError naming the file if it cannot be had (the file
        client and imfrombytes name what they cannot read or decode: basicsr_compat)."""
        if self.file_client is None:
            backend_opt = dict(self.io_backend_opt)
            self.file_client = FileClient(backend_opt.pop('type'), **backend_opt)
        try:
            img_bytes = self.file_client.get(gt_path, 'gt')
        except OSError as err:
            raise ImageError(f'Cannot read image {gt_path}: {err}') from err
        return imfrombytes(img_bytes, float32=True)

    def __getitem__(self, index: int) -> Dict:
        gt_path = self.paths[index]
        for _ in range(MAX_SKIPPED_READS):
            try:
                img_gt = self._read_gt(gt_path)
                break
            except ImageError as err:
                if not (self.skip_corrupt and self.is_train):
                    raise
                get_root_logger().warning(f'skip_corrupt: {err} Using another random sample.')
                gt_path = self.paths[random.randrange(len(self.paths))]
        else:
            raise ImageError(
                f'skip_corrupt: {MAX_SKIPPED_READS} reads in a row failed, the last '
                f'one {gt_path}; check dataroot_gt {self.gt_folder}.'
            )

        if self.is_train:
            img_gt, img_lq = self._train_pair(img_gt)
        else:
            img_gt = mod_crop(img_gt, self.scale)
            if min(img_gt.shape[:2]) < 2 * self.scale:
                raise DatasetError(
                    f'{gt_path} ({img_gt.shape[1]}x{img_gt.shape[0]} after cropping to a multiple of '
                    f'{self.scale}) is too small for x{self.scale}: the LQ needs at least 2 pixels a side'
                )
            img_lq = imresize(img_gt, 1 / self.scale)
        img_lq = quantize(img_lq)

        if self.opt.get('color') == 'y':
            img_gt = bgr2ycbcr(img_gt, y_only=True)[..., None]
            img_lq = bgr2ycbcr(img_lq, y_only=True)[..., None]

        img_gt, img_lq = img2tensor([img_gt, img_lq], bgr2rgb=True, float32=True)
        if self.mean is not None or self.std is not None:
            normalize(img_lq, self.mean, self.std, inplace=True)
            normalize(img_gt, self.mean, self.std, inplace=True)
        return {'lq': img_lq, 'gt': img_gt, 'lq_path': gt_path, 'gt_path': gt_path}

    def _train_pair(self, img_gt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        gt_size = self.opt['gt_size']
        img_gt = mod_crop(enlarge_to_fit(img_gt, gt_size), self.scale)
        lq_size = gt_size // self.scale
        h_lq, w_lq = img_gt.shape[0] // self.scale, img_gt.shape[1] // self.scale
        top = random.randint(0, h_lq - lq_size)
        left = random.randint(0, w_lq - lq_size)
        img_gt, img_lq = crop_pair(img_gt, self.scale, top, left, lq_size)
        # augment flips in place with cv2, which needs contiguous arrays, not views into the image.
        pair = [np.ascontiguousarray(img_gt), np.ascontiguousarray(img_lq)]
        img_gt, img_lq = augment(pair, self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
        return img_gt, img_lq

    def __len__(self) -> int:
        return len(self.paths)

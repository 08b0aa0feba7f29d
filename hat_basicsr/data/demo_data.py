"""A small real SR dataset built offline from the photographs bundled with scikit-image.

It lets the tests, the demo option files and a first training run work without downloading DF2K:
HR patches and MATLAB-bicubic LR (x2, x3, x4) in BasicSR's PairedImageDataset layout, the same as
LMDBs, a meta_info list, and a few held-out validation images. Building takes a few seconds and is
skipped when already done.
"""

import contextlib
import io
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple, Union

import numpy as np

from basicsr.utils import imwrite
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from basicsr.utils.matlab_functions import imresize

SCALES = (2, 3, 4)
PATCH_SIZE = 192  # a multiple of 12, so every scale divides it
# Bump when the content changes, so that an older build is rebuilt rather than reused.
FORMAT_VERSION = '1'
STAMP = '.complete'


def _skimage_photo(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data as skdata

        img = getattr(skdata, name)()
        return img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: (left, right, disparity)

    return load


# Colour photographs that scikit-image ships inside its wheel (no pooch download).
TRAIN_PHOTOS: Dict[str, Callable[[], np.ndarray]] = {
    name: _skimage_photo(name) for name in ('astronaut', 'coffee', 'stereo_motorcycle', 'immunohistochemistry')
}
# Held-out validation photos and the HR centre-crop size (h, w): multiples of 12 so that x2/x3/x4
# LR exist, and none of the LR sizes a multiple of 16 so that models must pad to their window.
VAL_PHOTOS: Dict[str, Tuple[Callable[[], np.ndarray], Tuple[int, int]]] = {
    'chelsea': (_skimage_photo('chelsea'), (180, 180)),
    'rocket': (_skimage_photo('rocket'), (156, 204)),
}


def grid_patches(img: np.ndarray, size: int) -> List[np.ndarray]:
    """Non-overlapping size x size patches on a grid centred in the image, row by row."""
    h, w = img.shape[:2]
    rows, cols = h // size, w // size
    top0, left0 = (h - rows * size) // 2, (w - cols * size) // 2
    return [
        img[top0 + r * size : top0 + (r + 1) * size, left0 + c * size : left0 + (c + 1) * size]
        for r in range(rows)
        for c in range(cols)
    ]


def center_crop(img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    h, w = img.shape[:2]
    if h < size[0] or w < size[1]:
        raise ValueError(f'Cannot centre-crop a {h}x{w} photo to {size[0]}x{size[1]}.')
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return img[top : top + size[0], left : left + size[1]]


def bicubic_lr(img_bgr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-style bicubic downscale of a uint8 image, rounded back to uint8 (as the SR benchmarks are made)."""
    lr = imresize(img_bgr.astype(np.float32) / 255.0, 1 / scale)
    return np.round(np.clip(lr * 255.0, 0, 255)).astype(np.uint8)


def write_split(folder: Path, images: Dict[str, np.ndarray]) -> None:
    """HR/<name>.png and LR_bicubic/X<s>/<name>.png for every scale; files already there are kept."""
    for name, img_bgr in images.items():
        hr_path = folder / 'HR' / f'{name}.png'
        if not hr_path.exists():
            imwrite(img_bgr, str(hr_path))
        for scale in SCALES:
            lr_path = folder / 'LR_bicubic' / f'X{scale}' / f'{name}.png'
            if not lr_path.exists():
                imwrite(bicubic_lr(img_bgr, scale), str(lr_path))


def write_lmdb(image_folder: Path, lmdb_path: Path) -> None:
    """LMDB of every PNG in image_folder via basicsr's make_lmdb_from_imgs (which exits the process
    if its target exists): skipped when lmdb_path exists, written under a temporary name and then
    renamed so an interrupted build leaves no half-written LMDB behind."""
    if lmdb_path.exists():
        return
    names = sorted(p.name for p in image_folder.glob('*.png'))
    partial = lmdb_path.with_name(lmdb_path.stem + '.partial.lmdb')
    shutil.rmtree(partial, ignore_errors=True)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        make_lmdb_from_imgs(str(image_folder), str(partial), names, [Path(n).stem for n in names])
    os.replace(partial, lmdb_path)


def train_images() -> Dict[str, np.ndarray]:
    images = {}
    for photo, load in TRAIN_PHOTOS.items():
        rgb = load()[..., :3]
        for i, patch in enumerate(grid_patches(rgb, PATCH_SIZE)):
            images[f'{photo}_{i:02d}'] = np.ascontiguousarray(patch[..., ::-1])
    return images


def val_images() -> Dict[str, np.ndarray]:
    return {
        photo: np.ascontiguousarray(center_crop(load()[..., :3], size)[..., ::-1])
        for photo, (load, size) in VAL_PHOTOS.items()
    }


def build_demo_data(root: Union[str, Path] = 'datasets/demo', force: bool = False) -> Path:
    """Build (or find already built) the demo dataset under root and return root.

    Layout: train/HR, train/LR_bicubic/X{2,3,4} (same file names), train/HR.lmdb,
    train/LR_bicubic_X{2,3,4}.lmdb, train/meta_info.txt, val/HR, val/LR_bicubic/X{2,3,4}.
    force=True deletes root/train and root/val first.
    """
    root = Path(root)
    stamp = root / STAMP
    if force:
        for split in ('train', 'val'):
            shutil.rmtree(root / split, ignore_errors=True)
        stamp.unlink(missing_ok=True)
    if stamp.exists() and stamp.read_text().strip() == FORMAT_VERSION:
        return root

    start = time.perf_counter()
    train, val = train_images(), val_images()
    write_split(root / 'train', train)
    write_split(root / 'val', val)
    write_lmdb(root / 'train' / 'HR', root / 'train' / 'HR.lmdb')
    for scale in SCALES:
        write_lmdb(root / 'train' / 'LR_bicubic' / f'X{scale}', root / 'train' / f'LR_bicubic_X{scale}.lmdb')
    (root / 'train' / 'meta_info.txt').write_text(
        ''.join(f'{name}.png ({img.shape[0]},{img.shape[1]},{img.shape[2]})\n' for name, img in sorted(train.items()))
    )
    stamp.write_text(FORMAT_VERSION + '\n')
    print(
        f'demo data in {root}: {len(train)} train patches {PATCH_SIZE}x{PATCH_SIZE} from {len(TRAIN_PHOTOS)} '
        f'photos, {len(val)} val images, LR x{"/x".join(map(str, SCALES))}, 4 LMDBs '
        f'({time.perf_counter() - start:.1f}s)'
    )
    return root

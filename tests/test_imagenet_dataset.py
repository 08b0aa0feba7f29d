"""ImageNetPairedDataset: windowed LQ equals whole-image LQ, sources agree, bad files are named."""

import logging
import random
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest
import torch

import hat_basicsr  # noqa: F401  (registers the dataset)
from hat_basicsr.data.imagenet_paired_dataset import (
    KERNEL_REACH_LR,
    LAYOUT_BLOCK_LR,
    crop_pair,
    enlarge_to_fit,
    lq_window,
    quantize,
)
from hat_basicsr.errors import DatasetError, ImageError

from basicsr.data import build_dataset
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from basicsr.utils.matlab_functions import imresize


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img * 255, 0, 255))


def test_lq_window_reaches_kernel_and_keeps_layout():
    for length in (20, 37, 100, 375):
        for size in (8, 16):
            for start in range(0, length - size + 1):
                lo, hi = lq_window(start, size, length)
                assert lo == 0 or lo <= start - KERNEL_REACH_LR
                assert hi == length or hi >= start + size + KERNEL_REACH_LR + LAYOUT_BLOCK_LR
                assert lo % LAYOUT_BLOCK_LR == 0 and (length - hi) % LAYOUT_BLOCK_LR == 0
                assert hi - lo <= size + 2 * KERNEL_REACH_LR + 3 * LAYOUT_BLOCK_LR
    with pytest.raises(ValueError, match='does not fit'):
        lq_window(10, 16, 20)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_windowed_lq_equals_cropped_whole_image_lq(scale: int):
    rng = np.random.default_rng(scale)
    picker = random.Random(scale)
    float_diff = 0.0
    for h_lq, w_lq in ((37, 53), (70, 45), (24, 24), (131, 190)):
        img = (rng.integers(0, 256, (h_lq * scale, w_lq * scale, 3)) / 255).astype(np.float32)
        whole = imresize(img, 1 / scale)
        for lq_size in (16, 11):
            corners = [(0, 0), (0, w_lq - lq_size), (h_lq - lq_size, 0), (h_lq - lq_size, w_lq - lq_size)]
            randoms = [(picker.randint(0, h_lq - lq_size), picker.randint(0, w_lq - lq_size)) for _ in range(25)]
            for top, left in corners + randoms:
                gt, lq = crop_pair(img, scale, top, left, lq_size)
                expected = whole[top : top + lq_size, left : left + lq_size]
                gt_size = lq_size * scale
                np.testing.assert_array_equal(
                    gt, img[top * scale : top * scale + gt_size, left * scale : left * scale + gt_size]
                )
                np.testing.assert_array_equal(to_uint8(lq), to_uint8(expected), err_msg=f'{top=} {left=}')
                float_diff = max(float_diff, float(np.abs(lq - expected).max()))
    print(f'scale {scale}: float max abs diff windowed vs whole-image LQ = {float_diff:.3g}')
    assert float_diff < 1e-6


def write_images(folder: Path, sizes: List[tuple], seed: int = 0) -> List[str]:
    """Smooth random photos-like images (noise is a poor test of resampling alignment)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, (h, w) in enumerate(sizes):
        coarse = rng.integers(0, 256, (h // 6 + 2, w // 6 + 2, 3)).astype(np.uint8)
        img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        name = f'img_{i:02d}.png'
        cv2.imwrite(str(folder / name), img)
        names.append(name)
    return names


def dataset_opt(root: Path, **extra) -> Dict:
    opt = {
        'name': 'test',
        'type': 'ImageNetPairedDataset',
        'dataroot_gt': str(root),
        'io_backend': {'type': 'disk'},
        'scale': 2,
        'phase': 'train',
        'gt_size': 32,
        'use_hflip': True,
        'use_rot': True,
    }
    opt.update(extra)
    return opt


def samples(opt: Dict, seed: int = 0, count: int = 6) -> List[Dict]:
    dataset = build_dataset(opt)
    random.seed(seed)
    return [dataset[i % len(dataset)] for i in range(count)]


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp('gt') / 'HR'
    write_images(folder, [(70, 90), (64, 64), (81, 100)])
    return folder


def test_folder_meta_info_and_lmdb_give_the_same_samples(image_folder: Path, tmp_path: Path):
    names = sorted(p.name for p in image_folder.iterdir())
    meta = tmp_path / 'meta_info.txt'
    meta.write_text(''.join(f'{name} (70,90,3)\n' for name in names))
    lmdb_path = tmp_path / 'HR.lmdb'
    make_lmdb_from_imgs(str(image_folder), str(lmdb_path), names, [Path(n).stem for n in names])

    from_folder = samples(dataset_opt(image_folder))
    from_meta = samples(dataset_opt(image_folder, meta_info=str(meta)))
    # the release's option files: BasicSR's key meta_info_file, and dataroot_lq set to the GT folder
    from_release_keys = samples(dataset_opt(image_folder, meta_info_file=str(meta), dataroot_lq=str(image_folder)))
    from_lmdb = samples(dataset_opt(lmdb_path, io_backend={'type': 'lmdb'}))
    for a, b, c, d in zip(from_folder, from_meta, from_lmdb, from_release_keys):
        assert all(torch.equal(b[key], d[key]) for key in ('gt', 'lq')) and b['gt_path'] == d['gt_path']
        assert a['gt'].shape == (3, 32, 32) and a['lq'].shape == (3, 16, 16)
        for key in ('gt', 'lq'):
            assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])
        assert a['gt_path'] == b['gt_path'] == a['lq_path']
        assert c['gt_path'] == Path(a['gt_path']).stem


def test_flipped_and_rotated_samples_stay_aligned(image_folder: Path):
    dataset = build_dataset(dataset_opt(image_folder, gt_size=48))
    random.seed(1)
    for i in range(12):
        sample = dataset[i % len(dataset)]
        gt = sample['gt'].permute(1, 2, 0).numpy()
        lq = sample['lq'].permute(1, 2, 0).numpy()
        # Inside the patch (away from its borders, where the patch lacks the kernel's context),
        # the LQ is the bicubic of the GT up to 8-bit rounding (and clipping of overshoot).
        reach = KERNEL_REACH_LR
        diff = np.abs(np.clip(imresize(gt, 1 / 2), 0, 1) - lq)[reach:-reach, reach:-reach]
        assert diff.max() <= 0.5 / 255 + 1e-5


def test_validation_phase_returns_whole_image_and_its_lq(image_folder: Path):
    dataset = build_dataset(dataset_opt(image_folder, phase='val', scale=3))
    sample = dataset[2]  # 81 x 100 -> modcrop 81 x 99
    assert sample['gt'].shape == (3, 81, 99) and sample['lq'].shape == (3, 27, 33)
    gt = sample['gt'].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(sample['lq'].permute(1, 2, 0).numpy(), quantize(imresize(gt, 1 / 3)))


def test_y_channel_and_normalisation(image_folder: Path):
    plain = samples(dataset_opt(image_folder, phase='val'), count=1)[0]
    y_only = samples(dataset_opt(image_folder, phase='val', color='y'), count=1)[0]
    normalised = samples(dataset_opt(image_folder, phase='val', mean=[0.5] * 3, std=[0.25] * 3), count=1)[0]
    assert y_only['gt'].shape[0] == 1 and y_only['lq'].shape[0] == 1
    assert torch.allclose(normalised['lq'], (plain['lq'] - 0.5) / 0.25)


def test_small_image_is_enlarged_to_fit_the_patch(tmp_path: Path):
    write_images(tmp_path, [(30, 45)])
    sample = samples(dataset_opt(tmp_path, gt_size=64, scale=4), count=1)[0]
    assert sample['gt'].shape == (3, 64, 64) and sample['lq'].shape == (3, 16, 16)
    enlarged = enlarge_to_fit(np.full((30, 45, 3), 0.5, np.float32), 64)
    assert enlarged.shape == (64, 96, 3)
    assert np.allclose(enlarged, 0.5, atol=1e-6)


def test_corrupt_file_error_names_the_file(image_folder: Path, tmp_path: Path):
    write_images(tmp_path, [(64, 64)])
    (tmp_path / 'broken.png').write_bytes(b'\x89PNG not really')
    dataset = build_dataset(dataset_opt(tmp_path))
    broken = dataset.paths.index(str(tmp_path / 'broken.png'))
    with pytest.raises(ImageError, match='broken.png'):
        dataset[broken]

    meta = tmp_path / 'meta.txt'
    meta.write_text('img_00.png\nmissing.png\n')
    with pytest.raises(ImageError, match='missing.png'):
        build_dataset(dataset_opt(tmp_path, meta_info=str(meta)))[1]


def test_lmdb_missing_key_is_named(image_folder: Path, tmp_path: Path):
    lmdb_path = tmp_path / 'HR.lmdb'
    make_lmdb_from_imgs(str(image_folder), str(lmdb_path), ['img_00.png'], ['img_00'])
    with open(lmdb_path / 'meta_info.txt', 'a') as fout:
        fout.write('ghost.png (1,1,3) 1\n')
    dataset = build_dataset(dataset_opt(lmdb_path, io_backend={'type': 'lmdb'}))
    with pytest.raises(ImageError, match='ghost'):
        dataset[1]


def test_skip_corrupt_warns_and_returns_another_sample(tmp_path: Path, caplog):
    write_images(tmp_path, [(64, 64), (64, 80)])
    (tmp_path / 'broken.png').write_bytes(b'garbage')
    dataset = build_dataset(dataset_opt(tmp_path, skip_corrupt=True))
    broken = dataset.paths.index(str(tmp_path / 'broken.png'))
    random.seed(0)
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        sample = dataset[broken]
    assert 'broken.png' in caplog.text
    assert not sample['gt_path'].endswith('broken.png')
    assert sample['gt'].shape == (3, 32, 32) and sample['gt'].std() > 0.01


def test_skip_corrupt_gives_up_on_an_all_corrupt_dataset(tmp_path: Path):
    (tmp_path / 'a.png').write_bytes(b'garbage')
    dataset = build_dataset(dataset_opt(tmp_path, skip_corrupt=True))
    with pytest.raises(ImageError, match='a.png'):
        dataset[0]


def test_bad_options_are_named(image_folder: Path, tmp_path: Path):
    with pytest.raises(DatasetError, match=r"meta_info and meta_info_file name different list files \['x.txt', 'y"):
        build_dataset(dataset_opt(image_folder, meta_info='x.txt', meta_info_file='y.txt'))
    with pytest.raises(DatasetError, match='multiple of scale'):
        build_dataset(dataset_opt(image_folder, gt_size=33))
    with pytest.raises(DatasetError, match='no images'):
        build_dataset(dataset_opt(tmp_path))


def test_validation_never_substitutes_a_corrupt_image(tmp_path: Path):
    write_images(tmp_path, [(64, 64), (64, 80)])
    (tmp_path / 'broken.png').write_bytes(b'garbage')
    dataset = build_dataset(dataset_opt(tmp_path, skip_corrupt=True, phase='val'))
    with pytest.raises(ImageError, match='broken.png'):
        dataset[dataset.paths.index(str(tmp_path / 'broken.png'))]


@pytest.mark.parametrize('size', [(7, 10), (1, 1)])
def test_validation_image_too_small_for_the_scale_is_named(tmp_path: Path, size):
    write_images(tmp_path, [size])
    dataset = build_dataset(dataset_opt(tmp_path, phase='val', scale=4))
    with pytest.raises(DatasetError, match=r'too small for x4: the LQ needs at least 2 pixels a side'):
        dataset[0]

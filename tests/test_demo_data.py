"""The demo dataset builder (hat_basicsr.data.demo_data) and the demo option files that read it."""

import copy
import random
import re
import runpy
import sys
from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import pytest
import torch

import hat_basicsr  # noqa: F401  (registers the datasets)
from hat_basicsr.data.demo_data import PATCH_SIZE, SCALES, STAMP, VAL_PHOTOS, bicubic_lr, build_demo_data
from hat_basicsr.utils.option_yaml import read_option_yaml

from basicsr.data import build_dataset
from basicsr.utils import FileClient, imfrombytes

REPO = Path(__file__).resolve().parents[1]
DEMO_OPTIONS = sorted((REPO / 'options' / 'train' / 'demo').glob('*.yml'))


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory) -> Path:
    return build_demo_data(tmp_path_factory.mktemp('demo') / 'demo')


def names(folder: Path) -> list:
    return sorted(p.name for p in folder.glob('*.png'))


def test_layout_and_sizes(demo_root: Path):
    train_hr = names(demo_root / 'train' / 'HR')
    assert len(train_hr) >= 16
    for scale in SCALES:
        assert names(demo_root / 'train' / 'LR_bicubic' / f'X{scale}') == train_hr
        lr = cv2.imread(str(demo_root / 'train' / 'LR_bicubic' / f'X{scale}' / train_hr[0]))
        assert lr.shape == (PATCH_SIZE // scale, PATCH_SIZE // scale, 3)
    assert cv2.imread(str(demo_root / 'train' / 'HR' / train_hr[0])).shape == (PATCH_SIZE, PATCH_SIZE, 3)

    val_hr = names(demo_root / 'val' / 'HR')
    assert val_hr == sorted(f'{photo}.png' for photo in VAL_PHOTOS)
    assert not set(val_hr) & set(train_hr)
    lr_sides = []
    for name in val_hr:
        hr = cv2.imread(str(demo_root / 'val' / 'HR' / name))
        assert hr.shape[0] % 12 == 0 and hr.shape[1] % 12 == 0
        for scale in SCALES:
            lr = cv2.imread(str(demo_root / 'val' / 'LR_bicubic' / f'X{scale}' / name))
            assert lr.shape[:2] == (hr.shape[0] // scale, hr.shape[1] // scale)
            lr_sides += lr.shape[:2]
    assert any(side % 16 for side in lr_sides), 'some validation LR must need padding to the window'


def test_lr_is_matlab_bicubic_of_hr(demo_root: Path):
    for split in ('train', 'val'):
        name = names(demo_root / split / 'HR')[0]
        hr = cv2.imread(str(demo_root / split / 'HR' / name))
        for scale in SCALES:
            lr = cv2.imread(str(demo_root / split / 'LR_bicubic' / f'X{scale}' / name))
            np.testing.assert_array_equal(lr, bicubic_lr(hr, scale))


def test_lmdbs_and_meta_info_hold_the_same_images(demo_root: Path):
    train = demo_root / 'train'
    stems = [Path(n).stem for n in names(train / 'HR')]
    meta = [line.split()[0] for line in (train / 'meta_info.txt').read_text().splitlines()]
    assert meta == names(train / 'HR')
    for lmdb_name, folder in [('HR.lmdb', train / 'HR')] + [
        (f'LR_bicubic_X{s}.lmdb', train / 'LR_bicubic' / f'X{s}') for s in SCALES
    ]:
        lmdb_path = train / lmdb_name
        keys = [line.split('.')[0] for line in (lmdb_path / 'meta_info.txt').read_text().splitlines()]
        assert keys == stems
        client = FileClient('lmdb', db_paths=[str(lmdb_path)], client_keys=['x'])
        for key in (stems[0], stems[-1]):
            np.testing.assert_array_equal(imfrombytes(client.get(key, 'x')), cv2.imread(str(folder / f'{key}.png')))


def test_rebuild_is_skipped_and_force_rebuilds_identically(demo_root: Path, capsys):
    some_file = demo_root / 'train' / 'LR_bicubic' / 'X3' / names(demo_root / 'train' / 'HR')[3]
    before = some_file.read_bytes()
    mtime = some_file.stat().st_mtime_ns
    build_demo_data(demo_root)
    assert some_file.stat().st_mtime_ns == mtime and capsys.readouterr().out == ''

    build_demo_data(demo_root, force=True)
    assert some_file.stat().st_mtime_ns != mtime and some_file.read_bytes() == before
    assert (demo_root / STAMP).exists()
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and 'train patches' in summary[0]


def test_interrupted_build_is_completed(demo_root: Path):
    missing = demo_root / 'val' / 'LR_bicubic' / 'X4' / 'rocket.png'
    expected = missing.read_bytes()
    missing.unlink()
    (demo_root / STAMP).unlink()
    build_demo_data(demo_root)
    assert missing.read_bytes() == expected


def test_cli_builds_into_the_given_root(demo_root: Path, monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['make_demo_data.py', '--root', str(demo_root)])
    runpy.run_path(str(REPO / 'datasets' / 'make_demo_data.py'), run_name='__main__')
    assert f'ready: {demo_root}' in capsys.readouterr().out


def demo_option(path: Path, root: Path) -> Dict:
    """The option file's datasets, pointed at root instead of datasets/demo, as parse_options fills them."""
    opt = read_option_yaml(str(path))
    datasets = copy.deepcopy(opt['datasets'])
    for phase, data in datasets.items():
        data['phase'] = phase
        data['scale'] = opt['scale']
        for key in ('dataroot_gt', 'dataroot_lq', 'meta_info'):
            if key in data:
                assert data[key].startswith('datasets/demo/'), f'{path.name}: {key} outside datasets/demo'
                data[key] = data[key].replace('datasets/demo', str(root), 1)
    return {'scale': opt['scale'], 'num_gpu': opt['num_gpu'], 'network_g': opt['network_g'], 'datasets': datasets}


def test_demo_option_files_read_the_demo_data(demo_root: Path):
    assert [p.name for p in DEMO_OPTIONS] == [
        'HAT-tiny_SRx2_demo.yml',
        'HAT-tiny_SRx2_demo_imagenet.yml',
        'HAT-tiny_SRx2_demo_lmdb.yml',
    ]
    samples = {}
    for path in DEMO_OPTIONS:
        opt = demo_option(path, demo_root)
        assert opt['num_gpu'] == 0
        net = opt['network_g']
        assert net['embed_dim'] <= 48 and net['depths'] == [2, 2] and net['window_size'] == 8
        train = build_dataset(opt['datasets']['train'])
        gt_size = opt['datasets']['train']['gt_size']
        samples[path.stem] = {}
        for index in range(len(train)):
            random.seed(index)
            sample = train[index]
            assert sample['gt'].shape == (3, gt_size, gt_size)
            assert sample['lq'].shape == (3, gt_size // 2, gt_size // 2)
            samples[path.stem][Path(sample['gt_path']).stem] = (index, sample)
        val = build_dataset(opt['datasets']['val'])
        assert len(val) == len(VAL_PHOTOS)
        assert {Path(val[i]['lq_path']).name for i in range(len(val))} == {f'{p}.png' for p in VAL_PHOTOS}
    # Same image and same random state: the folder and LMDB files give the same training pair, and
    # ImageNetPairedDataset (LQ made on the fly) gives the pair PairedImageDataset reads from disk.
    folder, lmdb = samples['HAT-tiny_SRx2_demo'], samples['HAT-tiny_SRx2_demo_lmdb']
    imagenet = samples['HAT-tiny_SRx2_demo_imagenet']
    assert folder.keys() == lmdb.keys() == imagenet.keys()
    for key, (index, sample) in lmdb.items():
        assert imagenet[key][0] == index
        assert torch.equal(imagenet[key][1]['gt'], sample['gt']) and torch.equal(imagenet[key][1]['lq'], sample['lq'])
    for key, (index, sample) in lmdb.items():
        random.seed(index)
        again = build_dataset(demo_option(DEMO_OPTIONS[0], demo_root)['datasets']['train'])[folder[key][0]]
        assert torch.equal(again['gt'], sample['gt']) and torch.equal(again['lq'], sample['lq'])


def test_demo_figures_agree_with_the_readme():
    """The demo option file and options/README.md quote the gain and time of `make demo`; they must
    lie in the README's measured range and say the README's duration (they went stale before)."""
    readme = (REPO / 'README.md').read_text(encoding='utf-8')
    low, high = map(float, re.search(r'gains of (\d\.\d+)-(\d\.\d+) dB measured', readme).groups())
    minutes = re.search(r'2000 iterations, about\s+(\d+) minutes', readme).group(1)
    for path in (REPO / 'options' / 'train' / 'demo' / 'HAT-tiny_SRx2_demo.yml', REPO / 'options' / 'README.md'):
        text = ' '.join(path.read_text(encoding='utf-8').split())
        gains = [float(value) for value in re.findall(r'(\d\.\d+) dB (?:above|over) bicubic', text)]
        gains += [float(value) for value in re.findall(r'(\d\.\d+)-\d\.\d+ dB depending', text)]
        assert gains and all(low - 0.05 <= gain <= high for gain in gains), (path, gains)
        assert re.findall(r'about (\S+) minutes', text) == [minutes], path

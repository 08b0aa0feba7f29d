"""Shared fixtures: tiny paired datasets (folders and LMDB) and a trained tiny HAT checkpoint, so
the training/test pipelines run end to end on CPU in seconds (the helpers they use: helpers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

import hat_basicsr  # noqa: F401  (makes `import basicsr` work)

from basicsr.utils.lmdb_util import make_lmdb_from_imgs

from helpers import SCALE, TorchRun, in_process_model, photo_crops, write_pairs


@pytest.fixture(scope='session')
def sr_data(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """Train set (4 pairs, HR 48 px) as folders and LMDBs, val set (2 pairs, HR 32 px)."""
    root = tmp_path_factory.mktemp('sr_data')
    names = write_pairs(root / 'train', photo_crops(4, 48, offset=11))
    write_pairs(root / 'val', photo_crops(2, 32, offset=140))
    for folder in ('HR', 'LR'):
        make_lmdb_from_imgs(
            str(root / 'train' / folder),
            str(root / 'train' / f'{folder}.lmdb'),
            names,
            [Path(name).stem for name in names],
        )
    (root / 'train' / 'meta_info.txt').write_text(''.join(f'{name}\n' for name in names))
    return {
        'root': root,
        'train_hr': root / 'train' / 'HR',
        'train_lr': root / 'train' / 'LR',
        'train_hr_lmdb': root / 'train' / 'HR.lmdb',
        'train_lr_lmdb': root / 'train' / 'LR.lmdb',
        'meta_info': root / 'train' / 'meta_info.txt',
        'val_hr': root / 'val' / 'HR',
        'val_lr': root / 'val' / 'LR',
    }


@pytest.fixture(scope='session')
def trained_checkpoint(sr_data: Dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BasicSR checkpoint ({'params', 'params_ema'}) of the tiny HAT after 30 training iterations."""
    import torch

    from basicsr.data import build_dataloader, build_dataset

    workdir = tmp_path_factory.mktemp('trained')
    torch.manual_seed(0)
    model = in_process_model(data=sr_data, workdir=workdir)
    dataset_opt = {**model.opt['datasets']['train'], 'phase': 'train', 'scale': SCALE}
    loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, seed=0)
    for step in range(1, 31):
        model.feed_data(next(iter(loader)))
        model.optimize_parameters(step)
    model.save(epoch=0, current_iter=-1)
    return workdir / 'models' / 'net_g_latest.pth'


@pytest.fixture
def torchrun(tmp_path: Path) -> Iterator[Callable[..., TorchRun]]:
    """Start TorchRun processes (probe files in tmp_path/probe); all are killed, with their workers,
    when the test ends."""
    probe_dir = tmp_path / 'probe'
    probe_dir.mkdir()
    started: List[TorchRun] = []

    def start(cwd: Path, torchrun_args: List[str], training_args: List[str], **env: Any) -> TorchRun:
        started.append(TorchRun(cwd, probe_dir, torchrun_args, training_args, **env))
        return started[-1]

    yield start
    for run in started:
        run.kill()

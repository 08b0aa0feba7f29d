"""A full disk while saving weights (issue 13): one line naming the file, the previous file kept, no
temporary file left; for atomic_save itself and for a training that runs out of space."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from hat_basicsr import HAT
from hat_basicsr.errors import OutputError
from hat_basicsr.utils import files
from hat_basicsr.utils.weights import atomic_save

from filesystems import simulate_full_disk, tmpfs
from helpers import TINY_HAT, run_python, train_options, write_options

SMALL, LARGE = {'params': {'w': torch.ones(16)}}, {'params': {'w': torch.zeros(256 * 1024)}}  # 64 B, 1 MiB


def assert_kept_and_clean(path: Path) -> None:
    assert torch.equal(torch.load(path, weights_only=True)['params']['w'], SMALL['params']['w'])
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_atomic_save_onto_a_full_filesystem(tmp_path):
    with tmpfs(tmp_path / 'disk', size=256 * 1024) as disk:
        path = disk / 'net_g_latest.pth'
        atomic_save(SMALL, path)
        # torch.save given a file name fails here with "RuntimeError: [enforce fail at inline_container.cc]".
        with pytest.raises(OutputError, match=f'^cannot write {path}: No space left on device$'):
            atomic_save(LARGE, path)
        assert_kept_and_clean(path)


def test_atomic_save_when_the_kernel_refuses_writes(tmp_path, monkeypatch):
    path = tmp_path / 'net_g_latest.pth'
    atomic_save(SMALL, path)
    simulate_full_disk(monkeypatch)
    with pytest.raises(OutputError, match=f'^cannot write {path}: No space left on device$'):
        atomic_save(LARGE, path)
    assert_kept_and_clean(path)


def test_ctrl_c_while_saving_stays_a_keyboard_interrupt(tmp_path, monkeypatch):
    """A Ctrl-C in the middle of torch.save's writes reaches the caller as KeyboardInterrupt (torch
    replaces it with a RuntimeError), so a training ends with its one interrupt line."""
    path = tmp_path / 'net_g_latest.pth'
    atomic_save(SMALL, path)
    writes = []

    def interrupted_write(self, data):
        writes.append(len(data))
        if len(writes) == 2:
            raise KeyboardInterrupt
        return io.FileIO.write(self, data)

    monkeypatch.setattr(files.RecordingFile, 'write', interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        atomic_save(LARGE, path)
    assert len(writes) == 2
    assert_kept_and_clean(path)


def test_training_that_fills_the_disk_stops_in_one_line_keeping_its_checkpoints(sr_data, tmp_path):
    network = HAT(**{key: value for key, value in TINY_HAT.items() if key != 'type'}).state_dict()
    buffer = io.BytesIO()
    torch.save(
        {key: {name: value.clone() for name, value in network.items()} for key in ('params', 'params_ema')}, buffer
    )
    checkpoint = buffer.tell()  # the training state (Adam's two moments) is about as large
    opt = train_options(sr_data, 'full_disk', total_iter=4, checkpoint_freq=2, val_freq=None)
    opt['logger']['use_tb_logger'] = False
    options = write_options(tmp_path / 'full_disk.yml', opt)
    script = Path(__file__).resolve().parents[1] / 'hat_basicsr' / 'train.py'
    # Room for the log and the first checkpoint and training state; the second checkpoint does not fit.
    with tmpfs(tmp_path / 'disk', size=int(2.5 * checkpoint)) as disk:
        proc = run_python([str(script), '-opt', str(options)], cwd=disk, check=False)
        run = disk / 'experiments' / 'full_disk'
        assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr
        assert (
            proc.stderr.strip()
            .splitlines()[-1]
            .endswith(f'cannot write {run / "models" / "net_g_4.pth"}: No space left on device')
        ), proc.stderr
        assert sorted(p.name for p in (run / 'models').iterdir()) == ['net_g_2.pth']
        assert sorted(p.name for p in (run / 'training_states').iterdir()) == ['2.state']
        assert set(torch.load(run / 'models' / 'net_g_2.pth', weights_only=True)) == {'params', 'params_ema'}
        assert torch.load(run / 'training_states' / '2.state', weights_only=True)['iter'] == 2

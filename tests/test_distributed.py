"""torchrun with two CPU processes (gloo) trains through hat_basicsr.train, and DDP keeps both
ranks' parameters identical; the ranks share one experiment lock."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from helpers import read_log, subprocess_env, train_options, write_options

# Runs the real entry point (`-m hat_basicsr.train` as __main__) with one test-only addition: every
# rank, not only rank 0, dumps its net_g parameters whenever the model saves.
PROBE = """
import os, runpy, torch
from hat_basicsr.models.hat_model import HATModel

save = HATModel.save

def save_and_dump(self, epoch, current_iter):
    save(self, epoch, current_iter)
    params = {k: v.detach().cpu() for k, v in self.get_bare_model(self.net_g).named_parameters()}
    torch.save(params, os.path.join(os.environ['PROBE_DIR'], f"rank{self.opt['rank']}_iter{current_iter}.pt"))

HATModel.save = save_and_dump
runpy.run_module('hat_basicsr.train', run_name='__main__')
"""


def test_torchrun_two_cpu_ranks_stay_identical(sr_data, tmp_path):
    probe_dir = tmp_path / 'probe'
    probe_dir.mkdir()
    (tmp_path / 'probe.py').write_text(textwrap.dedent(PROBE))
    options = write_options(
        tmp_path / 'ddp.yml', train_options(sr_data, 'ddp_run', total_iter=2, checkpoint_freq=2, val_freq=2)
    )
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    torchrun = shutil.which('torchrun', path=str(Path(sys.executable).parent))
    proc = subprocess.Popen(
        [
            torchrun,
            '--nproc_per_node=2',
            f'--master_port={port}',
            'probe.py',
            '-opt',
            str(options),
            '--launcher',
            'pytorch',
        ],
        cwd=tmp_path,
        env={**subprocess_env(), 'PROBE_DIR': str(probe_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks
            proc.wait()
    assert proc.returncode == 0, stdout[-3000:] + stderr[-6000:]
    assert 'ExperimentInUseError' not in stderr, 'a rank refused the lock of its own run'
    assert not (tmp_path / 'experiments' / 'ddp_run.lock').exists(), 'the lock outlived the run'

    log = read_log(tmp_path / 'experiments' / 'ddp_run', 'train')
    assert 'World size (gpu number): 2' in log and 'Validation tiny_val' in log
    rank0, rank1 = (torch.load(probe_dir / f'rank{rank}_iter2.pt', weights_only=True) for rank in (0, 1))
    assert rank0.keys() == rank1.keys()
    different = [name for name in rank0 if not torch.equal(rank0[name], rank1[name])]
    assert not different, f'ranks diverged in {different[:5]}'
    saved = torch.load(tmp_path / 'experiments' / 'ddp_run' / 'models' / 'net_g_2.pth', weights_only=True)['params']
    assert all(torch.equal(saved[name], rank0[name]) for name in rank0)

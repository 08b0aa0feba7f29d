"""Training on a cluster, with real torchrun processes on CPU/gloo: two "nodes" on localhost, each
in its own working directory (no shared filesystem), resume from one state and stay bit-identical
when their ranks swap; a worker group that torchrun restarts after a kill -9 resumes by itself."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Dict

import torch

from helpers import free_port, read_log, train_options, write_options

NAME = 'cluster'


def _options(sr_data: Dict[str, Path], folder: Path, total_iter: int, checkpoint_freq: int) -> Path:
    folder.mkdir(exist_ok=True)
    opt = train_options(sr_data, NAME, total_iter=total_iter, checkpoint_freq=checkpoint_freq, val_freq=None)
    opt['logger']['use_tb_logger'] = False
    return write_options(folder / 'train.yml', opt)


def _probe(tmp_path: Path, rank: int, iteration: int) -> Dict[str, Dict[str, torch.Tensor]]:
    return torch.load(tmp_path / 'probe' / f'rank{rank}_iter{iteration}.pt', weights_only=True)


def _assert_identical(first: Dict[str, Dict[str, torch.Tensor]], second: Dict[str, Dict[str, torch.Tensor]]) -> None:
    assert first.keys() == second.keys() == {'net_g', 'net_g_ema'}
    different = [
        f'{net}.{name}' for net in first for name in first[net] if not torch.equal(first[net][name], second[net][name])
    ]
    assert not different, f'ranks diverged in {different[:5]}'


def _no_archive(experiments: Path) -> None:
    assert not list(experiments.glob('*_archived_*')), sorted(p.name for p in experiments.iterdir())


def test_nodes_without_shared_disk_resume_from_one_state_after_their_ranks_swap(sr_data, tmp_path, torchrun):
    node_a, node_b = tmp_path / 'node_a', tmp_path / 'node_b'
    options = {node: _options(sr_data, node, total_iter=4, checkpoint_freq=4) for node in (node_a, node_b)}

    def launch(ranks: Dict[Path, int], *extra: str) -> None:
        port = free_port()
        runs = {
            node: torchrun(
                node,
                [
                    '--nnodes=2',
                    '--nproc_per_node=1',
                    f'--node_rank={rank}',
                    '--master_addr=127.0.0.1',
                    f'--master_port={port}',
                ],
                ['-opt', str(options[node]), '--launcher', 'pytorch', *extra],
            )
            for node, rank in ranks.items()
        }
        for node, run in runs.items():
            assert run.wait() == 0, f'{node.name}:\n{run.output[-6000:]}'

    launch({node_a: 0, node_b: 1})
    states_a = node_a / 'experiments' / NAME / 'training_states'
    assert sorted(p.name for p in states_a.iterdir()) == ['4.state']
    assert not (node_b / 'experiments' / NAME).exists(), 'rank 1 wrote an experiment folder'

    launch({node_a: 1, node_b: 0}, '--auto_resume', '--force_yml', 'train:total_iter=8')
    run_b = node_b / 'experiments' / NAME
    log = read_log(run_b, 'train')
    assert re.search(r'Resuming training from epoch: \d+, iter: 4\.', log)
    assert f'iter:{5:>8d},' in log and f'iter:{1:>8d},' not in log
    assert (run_b / 'training_states' / '4.state').read_bytes() == (states_a / '4.state').read_bytes()
    rank0, rank1 = _probe(tmp_path, 0, 8), _probe(tmp_path, 1, 8)
    _assert_identical(rank0, rank1)
    saved = torch.load(run_b / 'models' / 'net_g_8.pth', weights_only=True)
    assert all(torch.equal(saved['params_ema'][name], tensor) for name, tensor in rank0['net_g_ema'].items())
    for node in (node_a, node_b):
        _no_archive(node / 'experiments')


def test_torchrun_restart_after_a_worker_is_killed_resumes_from_the_newest_state(sr_data, tmp_path, torchrun):
    options = _options(sr_data, tmp_path, total_iter=4, checkpoint_freq=2)
    run = torchrun(
        tmp_path,
        ['--nproc_per_node=2', '--max-restarts=1', f'--master_port={free_port()}'],
        ['-opt', str(options), '--launcher', 'pytorch'],
        PROBE_PAUSE_AFTER_SAVE='1',
    )
    experiment = tmp_path / 'experiments' / NAME
    first_state, victim = experiment / 'training_states' / '2.state', tmp_path / 'probe' / 'pid_rank1_restart0'
    deadline = time.monotonic() + 120
    while not (first_state.exists() and victim.exists() and (tmp_path / 'probe' / 'rank1_iter2.pt').exists()):
        assert run.proc.poll() is None, run.output[-6000:]
        assert time.monotonic() < deadline, 'no training state saved within 120 s'
        time.sleep(0.1)
    os.kill(int(victim.read_text()), signal.SIGKILL)

    assert run.wait() == 0, run.output[-6000:]
    assert (tmp_path / 'probe' / 'pid_rank0_restart1').exists(), 'torchrun did not restart the group'
    assert 'torchrun restarted the workers (restart 1): resuming from the newest training state' in run.output
    log = read_log(experiment, 'train')
    assert re.search(r'Resuming training from epoch: \d+, iter: 2\.', log)
    assert f'iter:{3:>8d},' in log and f'iter:{1:>8d},' not in log
    _assert_identical(_probe(tmp_path, 0, 4), _probe(tmp_path, 1, 4))
    assert sorted(p.name for p in (experiment / 'training_states').iterdir()) == ['2.state', '4.state']
    _no_archive(tmp_path / 'experiments')

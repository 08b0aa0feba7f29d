"""torchrun with two CPU processes (gloo) trains through hat_basicsr.train, and DDP keeps both
ranks' parameters identical; the ranks share one experiment lock."""

from __future__ import annotations

import torch

from helpers import free_port, read_log, train_options, write_options


def test_torchrun_two_cpu_ranks_stay_identical(sr_data, tmp_path, torchrun):
    options = write_options(
        tmp_path / 'ddp.yml', train_options(sr_data, 'ddp_run', total_iter=2, checkpoint_freq=2, val_freq=2)
    )
    run = torchrun(
        tmp_path,
        ['--nproc_per_node=2', f'--master_port={free_port()}'],
        ['-opt', str(options), '--launcher', 'pytorch'],
    )
    assert run.wait() == 0, run.output[-6000:]
    assert 'ExperimentInUseError' not in run.output, 'a rank refused the lock of its own run'
    assert not (tmp_path / 'experiments' / 'ddp_run.lock').exists(), 'the lock outlived the run'

    log = read_log(tmp_path / 'experiments' / 'ddp_run', 'train')
    assert 'World size (gpu number): 2' in log and 'Validation tiny_val' in log
    rank0, rank1 = (torch.load(tmp_path / 'probe' / f'rank{rank}_iter2.pt', weights_only=True) for rank in (0, 1))
    assert rank0['net_g'].keys() == rank1['net_g'].keys()
    different = [name for name in rank0['net_g'] if not torch.equal(rank0['net_g'][name], rank1['net_g'][name])]
    assert not different, f'ranks diverged in {different[:5]}'
    saved = torch.load(tmp_path / 'experiments' / 'ddp_run' / 'models' / 'net_g_2.pth', weights_only=True)['params']
    assert all(torch.equal(saved[name], rank0['net_g'][name]) for name in rank0['net_g'])

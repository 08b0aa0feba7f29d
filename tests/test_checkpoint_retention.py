"""`logger.keep_checkpoints: N`: only the newest N checkpoint pairs stay, `net_g_latest.pth` and files
of other runs stay, deletions run in an order a kill cannot turn into an unresumable run, and a real
training killed with kill -9 while saving every iteration resumes and ends with exactly N pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Set

import pytest
import torch

from hat_basicsr.utils.checkpoint_retention import NETWORK_FILE, prune_checkpoints
from hat_basicsr.utils.resume_point import STATE_FILE

from helpers import (
    in_process_model,
    kill_training_when,
    read_log,
    run_python,
    train_options,
    write_options,
)


def _names(folder: Path) -> Set[str]:
    return {path.name for path in folder.iterdir()}


def test_model_keeps_the_newest_pairs_latest_and_files_of_later_iterations(sr_data, tmp_path):
    logger = {**train_options(sr_data, 'x')['logger'], 'keep_checkpoints': 2}
    model = in_process_model(sr_data, tmp_path, logger=logger)
    models, states = tmp_path / 'models', tmp_path / 'training_states'
    model.save(epoch=0, current_iter=-1)
    model.save(epoch=0, current_iter=1)
    (states / '9.state').write_bytes(b'a state of another run, numbered above this one')
    model.save(epoch=0, current_iter=2)
    (models / 'net_g_2.pth').unlink()  # iteration 2 is no longer a complete pair
    for iteration in (3, 4):
        model.save(epoch=0, current_iter=iteration)
    assert _names(models) == {'net_g_latest.pth', 'net_g_3.pth', 'net_g_4.pth'}
    assert _names(states) == {'3.state', '4.state', '9.state'}
    state = torch.load(states / '4.state', weights_only=True)
    assert state['iter'] == 4

    logger['keep_checkpoints'] = 1
    model.save(epoch=0, current_iter=5)
    assert _names(models) == {'net_g_latest.pth', 'net_g_5.pth'}
    assert _names(states) == {'5.state', '9.state'}


def test_without_keep_checkpoints_every_save_stays(sr_data, tmp_path):
    model = in_process_model(sr_data, tmp_path)
    for iteration in (1, 2, 3):
        model.save(epoch=0, current_iter=iteration)
    assert _names(tmp_path / 'models') == {f'net_g_{i}.pth' for i in (1, 2, 3)}


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'x')


def test_every_moment_of_a_pruning_leaves_the_newest_pairs_and_no_state_without_its_networks(tmp_path):
    """The deletions of one pruning, in the order made: a kill after any prefix of them leaves every
    remaining state with all its network files (net_g and net_d, as a GAN run saves) and the kept
    pairs whole."""
    models, states = tmp_path / 'models', tmp_path / 'training_states'
    for iteration in range(1, 7):
        _touch(states / f'{iteration}.state')
        for label in ('net_g', 'net_d'):
            if (iteration, label) != (5, 'net_d'):  # 5 lost net_d: not a complete pair
                _touch(models / f'{label}_{iteration}.pth')
    _touch(models / 'net_g_latest.pth')
    before = _names(models) | _names(states)

    deleted = [path.name for path in prune_checkpoints(models, states, newest_iter=6, keep=2)]

    kept = {'6.state', 'net_g_6.pth', 'net_d_6.pth', '4.state', 'net_g_4.pth', 'net_d_4.pth', 'net_g_latest.pth'}
    assert _names(models) | _names(states) == kept
    assert set(deleted) == before - kept and len(deleted) == len(set(deleted))
    for moment in range(len(deleted) + 1):
        remaining = before - set(deleted[:moment])
        assert kept <= remaining
        for name in remaining:
            state = STATE_FILE.fullmatch(name)
            if state and int(state.group(1)) != 5:
                networks = {
                    NETWORK_FILE.fullmatch(other).group(1)
                    for other in remaining
                    if NETWORK_FILE.fullmatch(other) and NETWORK_FILE.fullmatch(other).group(2) == state.group(1)
                }
                assert networks == {'net_g', 'net_d'}, f'after {deleted[:moment]}: {name} lost its networks'


def test_pruning_refuses_to_run_without_the_new_pair(tmp_path):
    _touch(tmp_path / 'models' / 'net_g_1.pth')
    _touch(tmp_path / 'training_states' / '1.state')
    with pytest.raises(FileNotFoundError, match='no complete checkpoint of iteration 2'):
        prune_checkpoints(tmp_path / 'models', tmp_path / 'training_states', newest_iter=2, keep=1)
    assert _names(tmp_path / 'models') == {'net_g_1.pth'}


def test_killed_run_with_retention_resumes_and_ends_with_the_newest_pairs(sr_data, tmp_path):
    """Saving every iteration, a kill -9 lands during or right after a save or a pruning."""
    opt = train_options(sr_data, 'bounded', total_iter=100000, checkpoint_freq=1, val_freq=None)
    opt['logger']['keep_checkpoints'] = 2
    options = write_options(tmp_path / 'bounded.yml', opt)
    run = tmp_path / 'experiments' / 'bounded'
    states = run / 'training_states'
    kill_training_when(
        options,
        tmp_path,
        lambda: any('Deleted 1.state, net_g_1.pth' in log.read_text() for log in run.glob('train_*.log')),
        'pruning',
    )
    saved = max(int(p.stem) for p in states.iterdir() if p.suffix == '.state')
    assert len(list(states.glob('*.state'))) <= 3  # the newest 2, and a third only mid-pruning

    run_python(
        [
            '-m',
            'hat_basicsr.train',
            '-opt',
            str(options),
            '--auto_resume',
            '--force_yml',
            f'train:total_iter={saved + 3}',
        ],
        cwd=tmp_path,
    )
    assert f', iter: {saved}.' in read_log(run, 'train').split('Resuming training from epoch: ')[1]
    final = saved + 3
    assert _names(run / 'models') == {'net_g_latest.pth', f'net_g_{final - 1}.pth', f'net_g_{final}.pth'}
    assert _names(states) == {f'{final - 1}.state', f'{final}.state'}

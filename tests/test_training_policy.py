"""hat_basicsr.training_policy: installed only by install_training_policy() (hat_basicsr.train calls
it), never by `import hat_basicsr`; with it, the experiment lock, auto-resume from the run's own
folder (the newest state that loads, the newest of all ranks), a torchrun restart resuming, and an
experiment folder kept under --auto_resume."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch

from hat_basicsr.errors import CheckpointError
from hat_basicsr.training_policy import install_training_policy

from helpers import free_port, run_python


@pytest.fixture(autouse=True, scope='module')
def training_policy() -> None:
    install_training_policy()


def test_import_leaves_basicsr_train_as_it_is_until_the_policy_is_installed(tmp_path):
    """In a fresh process: after `import hat_basicsr`, make_exp_dirs archives an existing experiment
    folder under --auto_resume and load_resume_state neither locks nor looks in the run's folder
    (BasicSR's behaviour, on the CPU); after install_training_policy() (twice) both follow the policy."""
    code = """
        import os, sys
        import torch
        import hat_basicsr
        import basicsr.train as train
        from hat_basicsr.training_policy import install_training_policy
        from hat_basicsr.utils import run_lock

        root = sys.argv[1]
        run = os.path.join(root, 'run')
        opt = {
            'name': 'run', 'is_train': True, 'auto_resume': True, 'rank': 0, 'dist': False, 'network_g': {},
            'path': {name: os.path.join(run, name) for name in ('models', 'training_states', 'visualization')},
        }
        opt['path'].update(experiments_root=run, log=run, resume_state=None)

        def attempt(label):
            os.makedirs(opt['path']['training_states'], exist_ok=True)
            state = {'iter': 3, 'epoch': 0, 'optimizers': [], 'schedulers': []}
            torch.save(state, os.path.join(opt['path']['training_states'], '3.state'))
            state = train.load_resume_state(opt)
            train.make_exp_dirs(opt)
            print(label, None if state is None else state['iter'], os.path.exists(run + '.lock'),
                  sorted(name.split('_archived_')[0] + ('_archived' if '_archived_' in name else '')
                         for name in os.listdir(root) if not name.endswith('.lock')))
            run_lock.release_all()

        attempt('import')
        install_training_policy()
        install_training_policy()
        attempt('policy')
    """
    (tmp_path / 'experiments').mkdir()
    experiments = tmp_path / 'experiments'
    # BasicSR looks in ./experiments/run: not there
    proc = run_python(['-c', textwrap.dedent(code), str(experiments)], experiments, timeout=120)
    imported, installed = [line for line in proc.stdout.splitlines() if line.startswith(('import ', 'policy '))]
    assert imported == "import None False ['run', 'run_archived']"
    assert installed.startswith('policy 3 True ')  # the run's own state, under its lock
    assert installed.endswith("['run', 'run_archived']")  # nothing archived this time


def _resume_opt(tmp_path: Path, auto_resume: bool = True) -> dict:
    return {
        'auto_resume': auto_resume,
        'network_g': {},
        'name': 'run',
        'rank': 0,
        'dist': False,
        'path': {
            'experiments_root': str(tmp_path / 'run'),
            'training_states': str(tmp_path / 'run' / 'training_states'),
            'models': str(tmp_path / 'run' / 'models'),
            'resume_state': None,
        },
    }


def test_auto_resume_uses_the_runs_own_folder_on_cpu(tmp_path, monkeypatch):
    import basicsr.train

    states = tmp_path / 'run' / 'training_states'
    states.mkdir(parents=True)
    for name, iteration in (('2.state', 2), ('10.state', 10), ('.12.state.x1.tmp', 12)):
        torch.save({'iter': iteration, 'epoch': 0, 'optimizers': [], 'schedulers': []}, states / name)
    (states / 'notes.state.bak').write_text('not a state')
    monkeypatch.chdir(tmp_path / 'run')  # basicsr looked in ./experiments/<name>: nothing here
    opt = _resume_opt(tmp_path)
    state = basicsr.train.load_resume_state(opt)
    assert state['iter'] == 10
    assert opt['path']['resume_state'] == str(states / '10.state')
    assert opt['path']['pretrain_network_g'] == str(tmp_path / 'run' / 'models' / 'net_g_10.pth')


def test_auto_resume_without_states_starts_fresh(tmp_path):
    import basicsr.train

    assert basicsr.train.load_resume_state(_resume_opt(tmp_path)) is None


def test_unloadable_resume_state_is_named(tmp_path):
    import basicsr.train

    states = tmp_path / 'run' / 'training_states'
    states.mkdir(parents=True)
    (states / '4.state').write_bytes(b'truncated')
    with pytest.raises(CheckpointError, match=re.escape(str(states / '4.state'))):
        basicsr.train.load_resume_state(_resume_opt(tmp_path))


def test_torchrun_restart_resumes_as_with_auto_resume(tmp_path, monkeypatch):
    """A worker group torchrun restarted resumes without --auto_resume: BasicSR would start over."""
    from hat_basicsr.utils import run_lock

    import basicsr.train

    states = tmp_path / 'run' / 'training_states'
    states.mkdir(parents=True)
    torch.save({'iter': 6, 'epoch': 1, 'optimizers': [], 'schedulers': []}, states / '6.state')
    monkeypatch.setenv('TORCHELASTIC_RESTART_COUNT', '1')
    opt = _resume_opt(tmp_path, auto_resume=False)
    try:
        assert basicsr.train.load_resume_state(opt)['iter'] == 6
    finally:
        run_lock.release_all()
    assert opt['auto_resume'] and opt['path']['resume_state'] == str(states / '6.state')


def test_distributed_auto_resume_agrees_on_a_state_or_names_the_unloadable_one(tmp_path, monkeypatch):
    """The rank-agreement path (one gloo rank here; two nodes: tests/test_cluster_training.py)."""
    from hat_basicsr.utils import run_lock

    import basicsr.train

    states = tmp_path / 'run' / 'training_states'
    states.mkdir(parents=True)
    torch.save({'iter': 2, 'epoch': 0, 'optimizers': [], 'schedulers': []}, states / '2.state')
    (states / '4.state').write_bytes(b'truncated')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(free_port()))
    torch.distributed.init_process_group('gloo', rank=0, world_size=1)
    try:
        opt = {**_resume_opt(tmp_path), 'dist': True, 'world_size': 1}
        assert basicsr.train.load_resume_state(opt)['iter'] == 2
        assert opt['path']['pretrain_network_g'] == str(tmp_path / 'run' / 'models' / 'net_g_2.pth')
        run_lock.release_all()
        (states / '2.state').write_bytes(b'garbage')
        with pytest.raises(CheckpointError, match=rf'^no training state in {re.escape(str(states))} loads'):
            basicsr.train.load_resume_state({**_resume_opt(tmp_path), 'dist': True, 'world_size': 1})
    finally:
        run_lock.release_all()
        torch.distributed.destroy_process_group()


def test_auto_resume_keeps_an_experiment_folder_without_states(tmp_path):
    """BasicSR archives an existing experiment folder when a run starts without a state; under
    --auto_resume (implied after a torchrun restart) it is the run's own and is kept."""
    import basicsr.train

    run = tmp_path / 'run'
    run.mkdir()
    (run / 'train_run_20260101_000000.log').write_text('the first attempt')
    opt = {**_resume_opt(tmp_path), 'is_train': True}
    opt['path'].update(log=str(run), visualization=str(run / 'visualization'))
    basicsr.train.make_exp_dirs(opt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run']
    assert sorted(p.name for p in run.iterdir()) == [
        'models',
        'train_run_20260101_000000.log',
        'training_states',
        'visualization',
    ]
    basicsr.train.make_exp_dirs({**opt, 'auto_resume': False})
    assert [p.name.startswith('run_archived_') for p in sorted(tmp_path.iterdir())] == [False, True]

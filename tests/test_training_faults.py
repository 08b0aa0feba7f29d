"""Training under faults, with real processes and signals: SIGTERM saves and resumes, Ctrl-C ends in
one line, two runs with one name cannot destroy each other, a diverged run saves nothing
non-finite, and auto-resume skips an unreadable newest state."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest
import torch

from hat_basicsr.errors import CheckpointError, NonFiniteTrainingError
from hat_basicsr.training_policy import install_training_policy
from hat_basicsr.utils import run_lock

from filesystems import tmpfs
from helpers import in_process_model, read_log, run_python, subprocess_env, train_options, write_options

PROG = 'hat_basicsr.train'


class Training:
    """A `python -m hat_basicsr.train` subprocess whose stdout/stderr go to files."""

    def __init__(self, cwd: Path, options: Path, tag: str, *extra: str) -> None:
        self.cwd, self.tag = cwd, tag
        with open(cwd / f'{tag}.out', 'w') as out, open(cwd / f'{tag}.err', 'w') as err:
            self.proc = subprocess.Popen(
                [sys.executable, '-m', PROG, '-opt', str(options), *extra],
                cwd=cwd,
                env=subprocess_env(),
                stdout=out,
                stderr=err,
            )

    @property
    def stderr(self) -> str:
        return (self.cwd / f'{self.tag}.err').read_text()

    def wait_for_iteration(self, run: Path, iteration: int, timeout: float = 180) -> None:
        """Until the run's log shows `iteration` finished (print_freq is 1)."""
        deadline = time.time() + timeout
        while not any(f'iter:{iteration:>8d},' in log.read_text() for log in run.glob('train_*.log')):
            assert self.proc.poll() is None, f'{self.tag} exited {self.proc.returncode}:\n{self.stderr[-3000:]}'
            assert time.time() < deadline, f'{self.tag} did not reach iteration {iteration}'
            time.sleep(0.1)

    def signal_and_wait(self, signum: int, timeout: float = 120) -> int:
        self.proc.send_signal(signum)
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def start_training(tmp_path: Path) -> Iterator[Callable[..., Training]]:
    """Start trainings in tmp_path; any still running at the end is killed."""
    started: List[Training] = []

    def start(options: Path, tag: str, *extra: str) -> Training:
        started.append(Training(tmp_path, options, tag, *extra))
        return started[-1]

    yield start
    for training in started:
        if training.proc.poll() is None:
            training.proc.kill()
            training.proc.wait()


def _endless(sr_data: Dict[str, Path], tmp_path: Path, name: str, checkpoint_freq: int = 1000) -> Path:
    return write_options(
        tmp_path / f'{name}.yml',
        train_options(sr_data, name, total_iter=100000, checkpoint_freq=checkpoint_freq, val_freq=None),
    )


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def _refusal(stderr: str, owner_pid: int) -> None:
    line = (
        rf"{PROG}: error: ExperimentInUseError: experiment 'shared' is being trained by another run "
        rf'\(pid {owner_pid} on host {re.escape(socket.gethostname())}, started [^;]+; lock \S+shared\.lock\): '
        r'wait for it to end, or give this run another name'
    )
    assert re.fullmatch(line, _last_line(stderr)), stderr
    assert 'Traceback' not in stderr


def test_live_run_refuses_its_name_and_sigterm_saves_the_finished_iteration(sr_data, tmp_path, start_training):
    """While a run lives, a second run and an --auto_resume of its name are refused (BasicSR would
    archive its folder or resume its state); SIGTERM then saves the iteration it finished, and
    --auto_resume continues from there."""
    options = _endless(sr_data, tmp_path, 'shared', checkpoint_freq=2)
    run = tmp_path / 'experiments' / 'shared'
    training = start_training(options, 'first')
    training.wait_for_iteration(run, 2)
    refused = [start_training(options, 'second'), start_training(options, 'resume', '--auto_resume')]
    for second in refused:
        assert second.proc.wait(timeout=180) == 1
        _refusal(second.stderr, training.proc.pid)
    assert sorted(p.name for p in (tmp_path / 'experiments').iterdir()) == ['shared', 'shared.lock'], 'archived'
    assert len(list(run.glob('train_*.log'))) == 1
    training.wait_for_iteration(run, 3)
    assert training.signal_and_wait(signal.SIGTERM) == 143

    stopped = re.fullmatch(
        rf'{PROG}: stopped by SIGTERM after iteration (\d+); saved (\S+); resume with '
        r'--auto_resume',
        _last_line(training.stderr),
    )
    assert stopped, training.stderr[-3000:]
    assert 'Traceback' not in training.stderr
    finished = int(stopped.group(1))
    assert finished >= 3 and stopped.group(2) == str(run / 'training_states' / f'{finished}.state')
    log = read_log(run, 'train')
    assert f'iter:{finished:>8d},' in log and f'iter:{finished + 1:>8d},' not in log, 'an iteration was lost or run'
    assert (run / 'training_states' / f'{finished}.state').is_file()
    assert (run / 'models' / f'net_g_{finished}.pth').is_file()
    assert not (tmp_path / 'experiments' / 'shared.lock').exists(), 'the lock outlived the run'

    run_python(
        ['-m', PROG, '-opt', str(options), '--auto_resume', '--force_yml', f'train:total_iter={finished + 1}'],
        cwd=tmp_path,
    )
    log = read_log(run, 'train')
    assert re.search(rf'Resuming training from epoch: \d+, iter: {finished}\.', log)
    assert f'iter:{finished + 1:>8d},' in log and (run / 'models' / 'net_g_latest.pth').is_file()


def test_ctrl_c_ends_with_one_line_naming_the_iteration(sr_data, tmp_path, start_training):
    options = _endless(sr_data, tmp_path, 'interrupted', checkpoint_freq=2)
    run = tmp_path / 'experiments' / 'interrupted'
    training = start_training(options, 'run')
    training.wait_for_iteration(run, 3)
    assert training.signal_and_wait(signal.SIGINT) == 130

    line = re.fullmatch(
        rf'{PROG}: interrupted at iteration (\d+) \(newest training state: iteration (\d+)\); '
        r'resume with --auto_resume',
        _last_line(training.stderr),
    )
    assert line, training.stderr[-3000:]
    assert 'Traceback' not in training.stderr and 'KeyboardInterrupt' not in training.stderr
    iteration, saved = map(int, line.groups())
    assert iteration >= 3 and saved == max(int(p.stem) for p in (run / 'training_states').iterdir())
    assert iteration - 2 <= saved <= iteration
    assert not (tmp_path / 'experiments' / 'interrupted.lock').exists()


def test_runs_started_together_one_trains_and_the_other_is_refused(sr_data, tmp_path, start_training):
    options = _endless(sr_data, tmp_path, 'shared', checkpoint_freq=2)
    run = tmp_path / 'experiments' / 'shared'
    trainings = [start_training(options, 'a'), start_training(options, 'b')]
    deadline = time.time() + 180
    while all(training.proc.poll() is None for training in trainings):
        assert time.time() < deadline, 'neither run was refused'
        time.sleep(0.1)
    refused, winner = sorted(trainings, key=lambda training: training.proc.poll() is None)
    assert refused.proc.returncode == 1
    _refusal(refused.stderr, winner.proc.pid)
    winner.wait_for_iteration(run, 2)
    assert winner.signal_and_wait(signal.SIGTERM) == 143
    assert sorted(p.name for p in (tmp_path / 'experiments').iterdir()) == ['shared']
    assert len(list(run.glob('train_*.log'))) == 1 and (run / 'models' / 'net_g_2.pth').is_file()


def _write_lock(path: Path, **owner) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(owner))


def test_lock_of_a_process_that_no_longer_runs_is_taken_over(tmp_path, caplog):
    ended = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    lock = tmp_path / 'experiments' / 'run.lock'
    _write_lock(lock, pid=int(ended.stdout), host=socket.gethostname(), time='yesterday')
    run_lock.acquire(str(lock), 'run')
    try:
        assert json.loads(lock.read_text())['pid'] == os.getpid()
        assert f'Took over the stale lock {lock}' in caplog.text and f'pid {int(ended.stdout)}' in caplog.text
    finally:
        run_lock.release(str(lock))
    assert not lock.exists()


def test_lock_naming_a_live_process_or_another_host_is_refused(tmp_path):
    """Even where flock does not protect (a lock file copied, NFS without locks): the recorded owner."""
    lock = tmp_path / 'experiments' / 'run.lock'
    with subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']) as sleeper:
        try:
            _write_lock(lock, pid=sleeper.pid, host=socket.gethostname(), started=run_lock._process_start(sleeper.pid))
            with pytest.raises(run_lock.ExperimentInUseError, match=rf'another run \(pid {sleeper.pid} on host'):
                run_lock.acquire(str(lock), 'run')
        finally:
            sleeper.kill()
    _write_lock(lock, pid=1, host='elsewhere.example')
    with pytest.raises(run_lock.ExperimentInUseError, match='on another host .*if that run has ended, delete the lock'):
        run_lock.acquire(str(lock), 'run')
    assert json.loads(lock.read_text())['host'] == 'elsewhere.example', 'a refused run changed the lock'


def test_read_only_experiments_folder_is_one_line_naming_it(sr_data, tmp_path, monkeypatch, capsys):
    """The lock file is the first thing a training writes; on a read-only experiments/ (a mount:
    root ignores permission bits) it is one line naming the folder, not os.open's traceback."""
    from hat_basicsr import train

    options = write_options(tmp_path / 'opt.yml', train_options(sr_data, 'read_only'))
    monkeypatch.chdir(tmp_path)
    with tmpfs(tmp_path / 'experiments', size=64 * 1024, read_only=True) as experiments:
        with pytest.raises(SystemExit) as stopped:
            train.main(['-opt', str(options)])
    assert stopped.value.code == (
        f'hat_basicsr.train: error: OutputError: cannot write into folder {experiments}: Read-only file system '
        '(a training keeps its lock file read_only.lock and its experiment folder there)'
    )


def test_diverging_training_stops_naming_the_iteration_and_saves_nothing_non_finite(sr_data, tmp_path):
    opt = train_options(sr_data, 'diverged', total_iter=20, checkpoint_freq=1, val_freq=None)
    opt['train']['optim_g']['lr'] = 1.0e30  # Adam moves every weight by about lr: the next forward overflows
    options = write_options(tmp_path / 'diverged.yml', opt)
    proc = run_python(['-m', PROG, '-opt', str(options)], cwd=tmp_path, check=False)
    assert proc.returncode == 1
    line = re.fullmatch(
        rf'{PROG}: error: NonFiniteTrainingError: training diverged at iteration (\d+): l_pix = '
        r'(nan|inf); stopped without saving it \(newest training state: iteration (\d+)\); lower the '
        r'learning rate or check the data and the loss options',
        _last_line(proc.stderr),
    )
    assert line, proc.stderr[-3000:]
    diverged, saved = int(line.group(1)), int(line.group(3))
    assert saved == diverged - 1
    run = tmp_path / 'experiments' / 'diverged'
    assert {p.name for p in (run / 'models').iterdir()} == {f'net_g_{i}.pth' for i in range(1, diverged)}
    for path in (run / 'models').iterdir():
        checkpoint = torch.load(path, weights_only=True)
        assert all(torch.isfinite(tensor).all() for params in checkpoint.values() for tensor in params.values())


def test_non_finite_ema_weights_are_not_saved(sr_data, tmp_path):
    model = in_process_model(sr_data, tmp_path)
    with torch.no_grad():
        next(model.net_g_ema.parameters())[0] = math.nan
    with pytest.raises(
        NonFiniteTrainingError,
        match=r'diverged at iteration 7: non-finite weights in 1 '
        r'tensor\(s\) of net_g \(first: params_ema\.conv_first\.weight\)',
    ):
        model.save(epoch=0, current_iter=7)
    assert not (tmp_path / 'models').exists() or not list((tmp_path / 'models').iterdir())
    assert not (tmp_path / 'training_states').exists() or not list((tmp_path / 'training_states').iterdir())


def test_auto_resume_skips_an_unreadable_newest_state(sr_data, tmp_path):
    options = write_options(
        tmp_path / 'run.yml', train_options(sr_data, 'bitrot', total_iter=4, checkpoint_freq=2, val_freq=None)
    )
    run_python(['-m', PROG, '-opt', str(options)], cwd=tmp_path)
    states = tmp_path / 'experiments' / 'bitrot' / 'training_states'
    newest = states / '4.state'
    newest.write_bytes(newest.read_bytes()[:200])  # truncated, e.g. by a full disk or a copy

    proc = run_python(
        ['-m', PROG, '-opt', str(options), '--auto_resume', '--force_yml', 'train:total_iter=5'], cwd=tmp_path
    )
    assert f'cannot load training state {newest}: ' in proc.stderr
    assert 'resuming from an older training state instead' in proc.stderr
    log = read_log(tmp_path / 'experiments' / 'bitrot', 'train')
    assert 'Resuming training from epoch: 0, iter: 2.' in log and f'iter:{5:>8d},' in log

    for path in states.iterdir():
        path.write_bytes(b'garbage')
    install_training_policy()
    import basicsr.train

    opt = {
        'name': 'bitrot',
        'rank': 0,
        'dist': False,
        'auto_resume': True,
        'network_g': {},
        'path': {
            'experiments_root': str(states.parent),
            'training_states': str(states),
            'models': str(states.parent / 'models'),
            'resume_state': None,
        },
    }
    try:
        expected = (
            rf'^no training state in {re.escape(str(states))} loads \(2 tried, '
            rf'newest {re.escape(str(newest))}\); move them away to start afresh$'
        )
        with pytest.raises(CheckpointError, match=expected):
            basicsr.train.load_resume_state(opt)
    finally:
        run_lock.release_all()

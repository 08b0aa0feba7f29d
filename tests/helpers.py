"""What the tests share besides fixtures: the tiny HAT and its option files, tiny paired data,
subprocess runs on one thread, BasicSR log reading, and an in-process HATModel."""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np
import pytest
import torch
import yaml

import hat_basicsr  # noqa: F401  (makes `import basicsr` work)
from hat_basicsr import HAT
from hat_basicsr.cli import run_subcommand

from basicsr.utils.matlab_functions import imresize

REPO_ROOT = Path(__file__).resolve().parents[1]
SCALE = 2
# A HAT of one RHAG with one HAB, window 4: the options the tests vary around.
TINY_OPTIONS = {
    'embed_dim': 16,
    'depths': [1],
    'num_heads': [2],
    'window_size': 4,
    'compress_ratio': 2,
    'squeeze_factor': 4,
    'mlp_ratio': 2,
    'img_size': 16,
    'upsampler': 'pixelshuffle',
}
# It as an option file's network_g, with the defaults spelled out.
TINY_HAT = {
    'type': 'HAT',
    'upscale': SCALE,
    **TINY_OPTIONS,
    'in_chans': 3,
    'conv_scale': 0.01,
    'overlap_ratio': 0.5,
    'img_range': 1.0,
    'resi_connection': '1conv',
}


def photo_crops(count: int, size: int, offset: int) -> List[np.ndarray]:
    """`count` BGR crops of `size` px from skimage's sample photos (real textures, no downloads)."""
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    crops = []
    for index in range(count):
        photo = photos[index % len(photos)]
        top = (offset + 37 * index) % (photo.shape[0] - size)
        left = (offset + 53 * index) % (photo.shape[1] - size)
        crops.append(np.ascontiguousarray(photo[top : top + size, left : left + size, ::-1]))
    return crops


def write_pairs(root: Path, crops: List[np.ndarray]) -> List[str]:
    """HR crops and their MATLAB-bicubic x2 LR versions as PNGs under root/HR and root/LR."""
    names = []
    for index, hr in enumerate(crops):
        name = f'img{index:03d}.png'
        lr = np.clip(imresize(hr.astype(np.float32) / 255.0, 1 / SCALE) * 255.0, 0, 255).round().astype(np.uint8)
        for folder, image in (('HR', hr), ('LR', lr)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / folder / name), image)
        names.append(name)
    return names


def val_dataset(data: Dict[str, Path], phase: str = 'val') -> Dict[str, Any]:
    return {
        'name': 'tiny_val',
        'type': 'PairedImageDataset',
        'dataroot_gt': str(data['val_hr']),
        'dataroot_lq': str(data['val_lr']),
        'io_backend': {'type': 'disk'},
        'phase': phase,
        'scale': SCALE,
    }


def train_options(
    data: Dict[str, Path],
    name: str,
    total_iter: int = 4,
    checkpoint_freq: int = 2,
    val_freq: Optional[int] = 2,
    train_dataset: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Options for a tiny HAT trained with L1, Adam, MultiStepLR and EMA, validated with PSNR/SSIM."""
    dataset = train_dataset or {
        'type': 'PairedImageDataset',
        'dataroot_gt': str(data['train_hr']),
        'dataroot_lq': str(data['train_lr']),
        'io_backend': {'type': 'disk'},
    }
    opt = {
        'name': name,
        'model_type': 'HATModel',
        'scale': SCALE,
        'num_gpu': 0,
        'manual_seed': 0,
        'datasets': {
            'train': {
                'name': 'tiny_train',
                'gt_size': 32,
                'use_hflip': True,
                'use_rot': True,
                'num_worker_per_gpu': 0,
                'batch_size_per_gpu': 2,
                'dataset_enlarge_ratio': 1,
                'prefetch_mode': None,
                **dataset,
            },
            'val': {k: v for k, v in val_dataset(data).items() if k not in ('phase', 'scale')},
        },
        'network_g': copy.deepcopy(TINY_HAT),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0.9,
            'optim_g': {'type': 'Adam', 'lr': 2e-3, 'weight_decay': 0, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [2, 1000], 'gamma': 0.5},
            'total_iter': total_iter,
            'warmup_iter': -1,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
        },
        'val': {
            'val_freq': val_freq,
            'save_img': True,
            'metrics': {
                'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': True},
                'ssim': {'type': 'calculate_ssim', 'crop_border': SCALE, 'test_y_channel': True},
            },
        },
        'logger': {'print_freq': 1, 'save_checkpoint_freq': checkpoint_freq, 'use_tb_logger': True},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }
    if val_freq is None:
        del opt['val'], opt['datasets']['val']
    return opt


def write_options(path: Path, opt: Dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def subprocess_env() -> Dict[str, str]:
    """One thread per process (the test machine's cores are shared) and no GPU."""
    return {
        **os.environ,
        'OMP_NUM_THREADS': '1',
        'MKL_NUM_THREADS': '1',
        'CUDA_VISIBLE_DEVICES': '',
        'PYTHONUNBUFFERED': '1',
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for torchrun's master)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# What TorchRun runs in each worker: the real entry point (`-m hat_basicsr.train` as __main__) with
# test-only additions. Each worker writes its pid to PROBE_DIR/pid_rank<R>_restart<N> (N: torchrun's
# restart count); every rank, not only rank 0, dumps the parameters of net_g and net_g_ema to
# PROBE_DIR/rank<R>_iter<I>.pt whenever the model saves; with PROBE_PAUSE_AFTER_SAVE set, the first
# group (restart 0) pauses after its first save until SIGTERM (at most 60 s), so a test can kill a
# worker mid-run.
TORCHRUN_PROBE = """
import os, runpy, time, torch
from hat_basicsr.models.hat_model import HATModel
from hat_basicsr.utils.training_stop import progress

probe_dir, rank = os.environ['PROBE_DIR'], os.environ['RANK']
restart = int(os.environ.get('TORCHELASTIC_RESTART_COUNT', 0))
with open(os.path.join(probe_dir, f'pid_rank{rank}_restart{restart}'), 'w') as file:
    file.write(str(os.getpid()))
save = HATModel.save

def save_and_dump(self, epoch, current_iter):
    save(self, epoch, current_iter)
    nets = {'net_g': self.net_g, 'net_g_ema': getattr(self, 'net_g_ema', None)}
    params = {
        label: {k: v.detach().cpu() for k, v in self.get_bare_model(net).named_parameters()}
        for label, net in nets.items() if net is not None
    }
    torch.save(params, os.path.join(probe_dir, f'rank{rank}_iter{current_iter}.pt'))
    if os.environ.get('PROBE_PAUSE_AFTER_SAVE') and restart == 0 and current_iter > 0:
        deadline = time.monotonic() + 60
        while not progress.stop_requested and time.monotonic() < deadline:
            time.sleep(0.05)

HATModel.save = save_and_dump
runpy.run_module('hat_basicsr.train', run_name='__main__')
"""


class TorchRun:
    """`torchrun TORCHRUN_ARGS probe.py TRAINING_ARGS` (see TORCHRUN_PROBE) in `cwd`, in a process
    group of its own so that kill() ends torchrun and its workers; output goes to a file."""

    def __init__(
        self, cwd: Path, probe_dir: Path, torchrun_args: Sequence[str], training_args: Sequence[str], **env: str
    ):
        probe = probe_dir / 'probe.py'
        if not probe.exists():
            probe.write_text(textwrap.dedent(TORCHRUN_PROBE))
        self.output_file = cwd / f'torchrun_{len(list(cwd.glob("torchrun_*.out")))}.out'
        torchrun = shutil.which('torchrun', path=str(Path(sys.executable).parent))
        with open(self.output_file, 'w') as output:
            self.proc = subprocess.Popen(
                [torchrun, *torchrun_args, str(probe), *training_args],
                cwd=cwd,
                env={**subprocess_env(), 'PROBE_DIR': str(probe_dir), **env},
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def output(self) -> str:
        return self.output_file.read_text()

    def wait(self, timeout: float = 180) -> int:
        """torchrun's exit status; its group is killed when it runs past `timeout` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f'torchrun ran past {timeout} s:\n{self.output[-6000:]}')

    def kill(self) -> None:
        """SIGKILL to torchrun and every worker still in its process group."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def run_python(args: List[str], cwd: Path, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python ARGS` (output captured); with check, fail the test showing the output."""
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        pytest.fail(f'python {" ".join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}')
    return proc


def run_torchrun(
    args: List[str], cwd: Path, nproc: int = 2, env: Optional[Dict[str, str]] = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=NPROC ARGS` on a free port, output captured; torchrun and all its
    ranks are killed if it outlives `timeout`."""
    torchrun = shutil.which('torchrun', path=str(Path(sys.executable).parent))
    proc = subprocess.Popen(
        [torchrun, f'--nproc_per_node={nproc}', f'--master_port={free_port()}', *args],
        cwd=cwd,
        env=env or subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def kill_training_when(options: Path, cwd: Path, ready: Callable[[], bool], what: str, timeout: float = 120) -> int:
    """Start `python -m hat_basicsr.train -opt OPTIONS` in `cwd` and kill -9 it once `ready()` holds
    (fail if it ends or `timeout` passes first, `what` naming the awaited moment); returns its pid."""
    proc = subprocess.Popen(
        [sys.executable, '-m', 'hat_basicsr.train', '-opt', str(options)],
        cwd=cwd,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + timeout
        while not ready():
            assert proc.poll() is None and time.time() < deadline, f'training ended or stalled before {what}'
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.pid


def read_log(folder: Path, prefix: str) -> str:
    """The text of the one BasicSR log file `prefix_*.log` in `folder`."""
    logs = sorted(folder.glob(f'{prefix}_*.log'))
    assert logs, f'no {prefix}_*.log in {folder}: {sorted(p.name for p in folder.iterdir())}'
    return logs[-1].read_text()


def in_process_model(data: Dict[str, Path], workdir: Path, **overrides: Any):
    """A HATModel built in this process from train_options (what parse_options would add, paths
    under workdir); `overrides` replace top-level options."""
    from hat_basicsr.models.hat_model import HATModel

    opt = train_options(data, 'in_process')
    opt.update(overrides)
    opt.update(is_train=opt.get('is_train', True), dist=False, rank=0, world_size=1, auto_resume=False)
    opt['path'].update({name: str(workdir / name) for name in ('models', 'training_states', 'visualization')})
    return HATModel(opt)


def run_command(add_parser: Callable[[argparse._SubParsersAction], None], argv: Sequence[str]) -> int:
    """Parse `argv` (starting with the subcommand name) with one subcommand's parser and run it,
    without importing the others (used by tests); a UserError is reported as `hat-basicsr` does."""
    parser = argparse.ArgumentParser(prog='hat-basicsr')
    add_parser(parser.add_subparsers(dest='command', required=True))
    return run_subcommand(parser.parse_args(list(argv)))


def small_hat(depths=(1,), window_size: int = 4, upscale: int = 2) -> HAT:
    """A seeded HAT small enough for the analysis tests (window 4, embed_dim 16)."""
    torch.manual_seed(0)
    return HAT(
        img_size=16,
        embed_dim=16,
        depths=list(depths),
        num_heads=[2] * len(depths),
        window_size=window_size,
        mlp_ratio=2,
        squeeze_factor=4,
        upscale=upscale,
        upsampler='pixelshuffle',
    )

"""What a training will do and need, from its option file alone: `hat-basicsr plan` prints it and
every training log starts with it.

Counts follow basicsr/train.py: each rank draws `batch_size_per_gpu` samples per iteration from its
share of the (enlarged) training set, validation runs every `val.val_freq` iterations and once after
the last, a numbered checkpoint pair (models/net_g_<iter>.pth + training_states/<iter>.state) is
written every `logger.save_checkpoint_freq` iterations and `net_g_latest.pth` at the end.

Bytes per save are the tensors a save holds plus torch.save's per-tensor overhead (measured on
torch 2.x zip files): the network file holds the state dict of net_g and of its EMA copy; the
training state holds Adam's two moments and its step count per parameter tensor; GAN models add
net_d's file and Adam state.

Memory per rank (rough): weights, gradients, Adam's two moments and the EMA copy in float32
(4 B x params x 5, x 4 without EMA; net_d's x 4) plus, for HAT, the activations autograd keeps for the backward
pass of one batch of `gt_size / scale` LR patches, per LR pixel and image in float32 values:

    HABs x (14.5 C + 1.13 heads ws^2) + RHAGs x (16.6 C + 1.1 heads ows^2) + 4 C + 80 scale^2

(C embed_dim, ws window_size, ows the OCAB's overlapping window; fitted to the saved tensors of
HATs of C 60-120, windows 8 and 16, x2 and x4, counted with torch.autograd.graph.saved_tensors_hooks,
within 10 % of them: tests/test_training_plan.py). It counts the attention maps of the math
attention path; fused GPU kernels keep fewer, gradient checkpointing (`use_checkpoint`) far fewer,
and the allocator adds its own slack, so read it as the order of magnitude.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from hat_basicsr.archs.hat_config import overlap_window_size
from hat_basicsr.option_check import META_INFO_KEYS, registered_class

# torch.save's bytes per tensor beyond its data: its zip entry, alignment and pickled key.
NETWORK_TENSOR_OVERHEAD = 330
# ... per parameter in Adam's state: three entries (exp_avg, exp_avg_sq, step) and the step tensor.
ADAM_PARAMETER_OVERHEAD = 780
FLOAT_BYTES = 4
# The fit of the activation formula in the module docstring.
HAB_PER_CHANNEL, HAB_PER_ATTENTION = 14.5, 1.13
OCAB_PER_CHANNEL, OCAB_PER_ATTENTION = 16.6, 1.1
STEM_PER_CHANNEL, UPSAMPLER_PER_SCALE2 = 4, 80


@dataclass
class NetworkSize:
    params: int
    param_tensors: int
    state_dict_bytes: int
    state_dict_tensors: int


@dataclass
class TrainingPlan:
    launcher: str
    world_size: int
    batch_per_rank: int
    batch_total: int
    train_images: int
    total_iter: int
    epochs: float
    samples: int
    validations: int
    saves: int
    keep_checkpoints: Optional[int]
    saves_kept: int
    bytes_per_save: int
    bytes_kept: int
    bytes_peak: int
    experiments_dir: str
    disk_free: int
    params: int
    memory_per_rank: Optional[int]
    warnings: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _list_file_lines(path: str) -> int:
    with open(path, encoding='utf-8') as lines:
        return sum(1 for line in lines if line.strip())


def count_training_images(dataset_opt: Mapping[str, Any], scale: int) -> int:
    """The training set's length as BasicSR builds it: the lines of its list file (an LMDB's
    meta_info.txt, or `meta_info`/`meta_info_file`) when it has one, which costs one read of that
    file, else the length of the dataset built by BasicSR's registry (a folder listing)."""
    if dataset_opt['io_backend']['type'] == 'lmdb':
        return _list_file_lines(os.path.join(os.path.expanduser(dataset_opt['dataroot_gt']), 'meta_info.txt'))
    for key in META_INFO_KEYS.get(dataset_opt['type'], ()):
        if dataset_opt.get(key):
            return _list_file_lines(os.path.expanduser(str(dataset_opt[key])))
    from basicsr.data import build_dataset

    return len(build_dataset({**dataset_opt, 'phase': 'train', 'scale': scale}))


def network_size(network_opt: Mapping[str, Any]) -> NetworkSize:
    """Parameter and state-dict sizes of `network_g`, built on the meta device (no memory)."""
    import torch

    from basicsr.utils.registry import ARCH_REGISTRY

    options = {key: value for key, value in network_opt.items() if key != 'type'}
    with torch.device('meta'):
        network = registered_class(ARCH_REGISTRY, network_opt['type'])(**options)
    parameters = list(network.parameters())
    state = network.state_dict()
    return NetworkSize(
        params=sum(p.numel() for p in parameters),
        param_tensors=len(parameters),
        state_dict_bytes=sum(t.numel() * t.element_size() for t in state.values()),
        state_dict_tensors=len(state),
    )


def checkpoint_bytes(size: NetworkSize, ema: bool) -> Tuple[int, int]:
    """(network file, training state) bytes of one save with Adam (the only optimizer BasicSR 1.4.2
    builds): the network file holds net_g's state dict and, with EMA, its copy."""
    network = (size.state_dict_bytes + size.state_dict_tensors * NETWORK_TENSOR_OVERHEAD) * (2 if ema else 1)
    state = 2 * FLOAT_BYTES * size.params + size.param_tensors * ADAM_PARAMETER_OVERHEAD
    return network, state


def hat_activation_bytes(network_opt: Mapping[str, Any], batch: int, lq_size: int) -> Optional[int]:
    """The module docstring's activation estimate for a HAT; None for other networks."""
    if network_opt.get('type') != 'HAT':
        return None
    channels = network_opt.get('embed_dim', 96)
    depths, heads = network_opt.get('depths', [6] * 4), network_opt.get('num_heads', [6] * 4)
    window = network_opt.get('window_size', 7)
    overlap_window = overlap_window_size(window, network_opt.get('overlap_ratio', 0.5))
    per_pixel = STEM_PER_CHANNEL * channels + UPSAMPLER_PER_SCALE2 * network_opt.get('upscale', 2) ** 2
    for depth, head in zip(depths, heads):
        per_pixel += depth * (HAB_PER_CHANNEL * channels + HAB_PER_ATTENTION * head * window**2)
        per_pixel += OCAB_PER_CHANNEL * channels + OCAB_PER_ATTENTION * head * overlap_window**2
    padded = math.ceil(lq_size / window) * window
    return int(FLOAT_BYTES * batch * padded**2 * per_pixel)


def _free_bytes(folder: str) -> int:
    """Free bytes on the filesystem that holds `folder` (its nearest existing ancestor)."""
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def gigabytes(count: int) -> str:
    return f'{count / 1e9:.2f} GB' if count >= 1e8 else f'{count / 1e6:.1f} MB'


def make_plan(opt: Mapping[str, Any], world_size: int, experiments_dir: str, num_gpu: int) -> TrainingPlan:
    """The plan of a checked option file (check_options) run as `world_size` processes (torchrun),
    `num_gpu` being num_gpu with `auto` resolved."""
    train_set = opt['datasets']['train']
    per_gpu = int(train_set['batch_size_per_gpu'])
    # Without a launcher BasicSR's loader multiplies the batch by num_gpu (DataParallel).
    batch_per_rank = per_gpu * (num_gpu if world_size == 1 and num_gpu > 1 else 1)
    batch_total = batch_per_rank * world_size
    images = count_training_images(train_set, opt['scale'])
    total_iter = int(opt['train']['total_iter'])
    val = opt.get('val')
    validations = total_iter // int(val['val_freq']) + 1 if val else 0
    saves = total_iter // int(opt['logger']['save_checkpoint_freq'])
    keep = opt['logger'].get('keep_checkpoints')
    kept = saves if keep is None else min(saves, int(keep))

    size = network_size(opt['network_g'])
    ema = float(opt['train'].get('ema_decay', 0)) > 0
    network_file, state_file = checkpoint_bytes(size, ema)
    states = FLOAT_BYTES * size.params * (5 if ema else 4)
    if opt.get('network_d'):  # GAN models also save net_d_<iter>.pth and its Adam state
        discriminator = network_size(opt['network_d'])
        discriminator_file, discriminator_state = checkpoint_bytes(discriminator, ema=False)
        network_file, state_file = network_file + discriminator_file, state_file + discriminator_state
        states += FLOAT_BYTES * discriminator.params * 4
    per_save = network_file + state_file
    bytes_kept = kept * per_save + network_file  # + net_g_latest.pth (and net_d_latest.pth)
    bytes_peak = bytes_kept + (per_save if kept < saves else 0)  # a new pair is written before pruning
    free = _free_bytes(experiments_dir)

    lq_size = int(train_set.get('gt_size', opt.get('gt_size', 64))) // opt['scale']
    activations = hat_activation_bytes(opt['network_g'], batch_per_rank, lq_size)
    warnings = []
    if bytes_peak > free:
        warnings.append(
            f'checkpoints need up to {gigabytes(bytes_peak)} but {gigabytes(free)} is free under '
            f'{experiments_dir}: set logger.keep_checkpoints (each kept save is {gigabytes(per_save)}) '
            'or raise logger.save_checkpoint_freq'
        )
    return TrainingPlan(
        launcher='pytorch (torchrun)' if world_size > 1 else 'none',
        world_size=world_size,
        batch_per_rank=batch_per_rank,
        batch_total=batch_total,
        train_images=images,
        total_iter=total_iter,
        epochs=total_iter * batch_total / images,
        samples=total_iter * batch_total,
        validations=validations,
        saves=saves,
        keep_checkpoints=None if keep is None else int(keep),
        saves_kept=kept,
        bytes_per_save=per_save,
        bytes_kept=bytes_kept,
        bytes_peak=bytes_peak,
        experiments_dir=experiments_dir,
        disk_free=free,
        params=size.params,
        memory_per_rank=None if activations is None else states + activations,
        warnings=warnings,
    )


def format_plan(plan: TrainingPlan) -> List[str]:
    """The plan as the lines `hat-basicsr plan` prints and the training log starts with."""
    kept = 'all' if plan.keep_checkpoints is None else f'the newest {plan.keep_checkpoints}'
    memory = (
        'not estimated for this network'
        if plan.memory_per_rank is None
        else f'~{gigabytes(plan.memory_per_rank)} (weights, grads, Adam, EMA, activations; rough)'
    )
    lines = [
        f'launcher: {plan.launcher}, world size {plan.world_size}',
        f'batch: {plan.batch_per_rank} per rank, {plan.batch_total} in total',
        f'iterations: {plan.total_iter:,} = {plan.samples:,} samples = {plan.epochs:.2f} epochs over '
        f'{plan.train_images:,} training images',
        f'validations: {plan.validations}; saves: {plan.saves} ({kept} kept)',
        f'bytes per save: {gigabytes(plan.bytes_per_save)} (network + EMA + Adam state); kept on disk: '
        f'{gigabytes(plan.bytes_kept)} (with net_g_latest), up to {gigabytes(plan.bytes_peak)} while saving',
        f'disk free under {plan.experiments_dir}: {gigabytes(plan.disk_free)}',
        f'parameters: {plan.params:,}; memory per rank: {memory}',
    ]
    return lines + [f'warning: {warning}' for warning in plan.warnings]

"""`hat-basicsr plan` and the plan block of the training log: counts as BasicSR trains, bytes per
save against real saves, the activation formula against autograd's saved tensors, the disk warning,
and the refusal of `num_gpu: N` started without torchrun (HAT issue #114)."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from hat_basicsr.cli import plan as plan_command
from hat_basicsr.errors import OptionFileError
from hat_basicsr.option_check import precheck_option_file
from hat_basicsr.train import main as train_main
from hat_basicsr.training_plan import checkpoint_bytes, hat_activation_bytes, make_plan, network_size

from basicsr.utils.registry import ARCH_REGISTRY

from helpers import REPO_ROOT, TINY_HAT, in_process_model, run_command, train_options, write_options

JSON_KEYS = {'world_size', 'batch_total', 'total_iter', 'epochs', 'bytes_per_save', 'saves', 'disk_free'}


def _one_step(model, data) -> None:
    from basicsr.data import build_dataloader, build_dataset

    dataset_opt = {**model.opt['datasets']['train'], 'phase': 'train', 'scale': model.opt['scale']}
    loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, seed=0)
    model.feed_data(next(iter(loader)))
    model.optimize_parameters(1)


def test_bytes_per_save_is_within_15_percent_of_a_real_save(sr_data, tmp_path):
    model = in_process_model(sr_data, tmp_path)
    _one_step(model, sr_data)  # Adam's moments exist from the first step on
    model.save(epoch=0, current_iter=1)
    written = (tmp_path / 'models' / 'net_g_1.pth').stat().st_size + (
        tmp_path / 'training_states' / '1.state'
    ).stat().st_size
    plan = make_plan(model.opt, world_size=1, experiments_dir=str(tmp_path), num_gpu=0)
    assert abs(plan.bytes_per_save / written - 1) < 0.15, (plan.bytes_per_save, written)


class _Counter(io.RawIOBase):
    """A write-only stream that counts bytes: a save's size without writing it."""

    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.count += len(data)
        return len(data)


def _serialized_size(obj) -> int:
    counter = _Counter()
    torch.save(obj, counter)
    return counter.count


def test_checkpoint_formula_for_hat_s_matches_its_serialised_save_and_hat_l_parameters():
    release = yaml.safe_load((REPO_ROOT / 'options' / 'train' / 'HAT-S_SRx4.yml').read_text())['network_g']
    size = network_size(release)
    assert size.params == 9_621_183
    torch.manual_seed(0)
    options = {key: value for key, value in release.items() if key != 'type'}
    net = ARCH_REGISTRY.get('HAT')(**options)
    ema = copy.deepcopy(net)
    optimizer = torch.optim.Adam(net.parameters())
    for parameter in net.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    network_file = _serialized_size({'params': net.state_dict(), 'params_ema': ema.state_dict()})
    state_file = _serialized_size({'epoch': 0, 'iter': 1, 'optimizers': [optimizer.state_dict()], 'schedulers': [{}]})
    estimated_network, estimated_state = checkpoint_bytes(size, ema=True)
    assert abs(estimated_network / network_file - 1) < 0.15
    assert abs(estimated_state / state_file - 1) < 0.15
    hat_l = yaml.safe_load((REPO_ROOT / 'options' / 'train' / 'HAT-L_SRx4_ImageNet-pretrain.yml').read_text())
    assert network_size(hat_l['network_g']).params == 40_846_575


def _saved_activation_bytes(net: torch.nn.Module, batch: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass (parameters excluded)."""
    storages = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        net(batch)
    parameters = {p.untyped_storage().data_ptr() for p in net.parameters()}
    return sum(size for pointer, size in storages.items() if pointer not in parameters)


@pytest.mark.parametrize(
    'network',
    [
        {**TINY_HAT, 'depths': [1], 'img_size': 16},
        {**TINY_HAT, 'embed_dim': 48, 'depths': [2, 2], 'num_heads': [4, 4], 'window_size': 8, 'upscale': 3},
    ],
    ids=['tiny', 'C48-w8-x3'],
)
def test_activation_formula_is_within_15_percent_of_the_saved_tensors(network):
    options = {key: value for key, value in network.items() if key != 'type'}
    net = ARCH_REGISTRY.get('HAT')(**options)
    lq_size = 2 * network['window_size'] + 8
    measured = _saved_activation_bytes(net, torch.rand(2, 3, lq_size, lq_size))
    estimated = hat_activation_bytes(network, batch=2, lq_size=lq_size)
    assert abs(estimated / measured - 1) < 0.15, (estimated, measured)


def _plan(capsys, options: Path, *extra: str):
    status = run_command(plan_command.add_parser, ['plan', '-opt', str(options), *extra])
    return status, capsys.readouterr()


def test_plan_json_and_text(sr_data, tmp_path, monkeypatch, capsys):
    opt = train_options(sr_data, 'planned', total_iter=40, checkpoint_freq=10, val_freq=20)
    opt['logger']['keep_checkpoints'] = 2
    options = write_options(tmp_path / 'planned.yml', opt)
    monkeypatch.chdir(tmp_path)

    status, out = _plan(capsys, options, '--json')
    assert status == 0, out.err
    plan = json.loads(out.out)
    assert JSON_KEYS <= set(plan)
    # 4 training images, batch 2: 40 iterations are 80 samples, 20 passes over the set.
    assert (plan['world_size'], plan['batch_total'], plan['total_iter'], plan['epochs']) == (1, 2, 40, 20.0)
    assert (plan['saves'], plan['saves_kept'], plan['validations'], plan['train_images']) == (4, 2, 3, 4)
    assert plan['params'] == network_size(TINY_HAT).params and plan['disk_free'] > 0
    assert plan['bytes_kept'] == 2 * plan['bytes_per_save'] + checkpoint_bytes(network_size(TINY_HAT), True)[0]
    assert plan['experiments_dir'] == str(tmp_path / 'experiments') and not plan['warnings']

    status, out = _plan(capsys, options, '--nproc', '2')
    assert status == 0
    assert 'launcher: pytorch (torchrun), world size 2' in out.out
    assert 'batch: 2 per rank, 4 in total' in out.out
    assert 'iterations: 40 = 160 samples = 40.00 epochs over 4 training images' in out.out
    assert 'saves: 4 (the newest 2 kept)' in out.out


def test_plan_warns_when_the_checkpoints_will_not_fit(sr_data, tmp_path, monkeypatch, capsys):
    options = write_options(tmp_path / 'big.yml', train_options(sr_data, 'big', total_iter=1000, checkpoint_freq=1))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr('shutil.disk_usage', lambda path: type('Usage', (), {'free': 10_000_000})())
    status, out = _plan(capsys, options)
    assert status == 0
    warning = re.search(
        rf'warning: checkpoints need up to (\S+) GB but 10.0 MB is free under {re.escape(str(tmp_path))}/experiments: '
        r'set logger.keep_checkpoints \(each kept save is (\S+) MB\) or raise logger.save_checkpoint_freq',
        out.out,
    )
    assert warning, out.out
    assert float(warning.group(1)) * 1e3 > 1000 * float(warning.group(2))  # 1000 saves, all kept


def test_num_gpu_above_one_without_torchrun_is_refused_naming_torchrun(sr_data, tmp_path, monkeypatch, capsys):
    options = write_options(tmp_path / 'eight.yml', {**train_options(sr_data, 'eight'), 'num_gpu': 8})
    expected = (
        f'{options}: num_gpu: 8 but started as one process: launch with torchrun --nproc_per_node=8 '
        f'-m hat_basicsr.train -opt {options} --launcher pytorch, or set num_gpu: 1'
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_status:
        train_main(['-opt', str(options)])
    assert exit_status.value.code == f'hat_basicsr.train: error: OptionFileError: {expected}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['eight.yml'], 'something was created'
    precheck_option_file(['-opt', str(options), '--launcher', 'pytorch'], 'hat_basicsr.train', True)
    with pytest.raises(OptionFileError, match='num_gpu: 8 but started as one process'):
        precheck_option_file(['-opt', str(options), '--launcher=none'], 'hat_basicsr.train', True)

    monkeypatch.setenv('WORLD_SIZE', '8')  # torchrun's, with --launcher forgotten
    with pytest.raises(OptionFileError, match=r'started by torchrun as 8 processes without --launcher pytorch, so'):
        precheck_option_file(['-opt', str(options)], 'hat_basicsr.train', True)
    monkeypatch.delenv('WORLD_SIZE')

    status, out = _plan(capsys, options, '--nproc', '1')
    assert status == 2 and out.err.strip() == f'hat-basicsr plan: error: {expected}'
    status, out = _plan(capsys, options)  # the default world size is num_gpu
    assert status == 0 and 'world size 8' in out.out and 'batch: 2 per rank, 16 in total' in out.out

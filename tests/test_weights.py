"""Loading HAT checkpoints in every form users hold them, and refusing the ones that do not fit."""

import collections
import os

import pytest
import torch
from safetensors.torch import save_file

from hat_basicsr import HAT
from hat_basicsr.errors import CheckpointError, CheckpointMismatchError, OutputError
from hat_basicsr.utils.weights import atomic_save, load_weights, read_state_dict

from helpers import TINY_HAT, in_process_model
from reference_fixtures import fixture_cases, fixture_options, fixture_weights_path

NAME = 'hat_tiny_x4_w8'


@pytest.fixture(scope='module')
def release_state():
    return torch.load(fixture_weights_path(NAME), weights_only=True)['params_ema']


def checkpoint_forms(state):
    prefixed = lambda prefix: {prefix + key: value for key, value in state.items()}
    return {
        'params_ema': {'params_ema': state},
        'params': {'params': state},
        'both_prefers_ema': {'params': {k: torch.zeros_like(v) for k, v in state.items()}, 'params_ema': state},
        'bare': state,
        'ddp': prefixed('module.'),
        'compiled': prefixed('_orig_mod.'),
        'ddp_of_compiled': {'params': prefixed('module._orig_mod.')},
    }


@pytest.mark.parametrize('form', list(checkpoint_forms({})))
def test_every_checkpoint_form_loads_and_reproduces_outputs(form, release_state, tmp_path):
    path = tmp_path / f'{form}.pth'
    torch.save(checkpoint_forms(release_state)[form], path)
    model = HAT(**fixture_options(NAME)).eval()
    load_weights(model, path)
    lq, expected = fixture_cases(NAME)[0]
    with torch.no_grad():
        assert (model(lq) - expected).abs().max() < 1e-5


def test_safetensors_and_explicit_param_key(release_state, tmp_path):
    path = tmp_path / 'weights.safetensors'
    save_file({k: v.contiguous() for k, v in release_state.items()}, str(path))
    assert read_state_dict(path).keys() == release_state.keys()
    both = tmp_path / 'both.pth'
    torch.save({'params': release_state, 'params_ema': {}}, both)
    assert read_state_dict(both, param_key='params').keys() == release_state.keys()
    with pytest.raises(CheckpointError, match="no 'params_x' entry"):
        read_state_dict(both, param_key='params_x')


def test_missing_index_buffers_are_rebuilt(release_state):
    state = {k: v for k, v in release_state.items() if not k.startswith('relative_position_index')}
    model = HAT(**fixture_options(NAME)).eval()
    load_weights(model, state)
    assert torch.equal(model.relative_position_index_OCA, release_state['relative_position_index_OCA'])


class Scaler(torch.nn.Module):
    """A model with a persistent buffer computed from its arguments, declared or not as derived."""

    def __init__(self, declares_derived: bool):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(2))
        self.register_buffer('grid', torch.arange(2.0))
        if declares_derived:
            self.derived_state_keys = lambda: ('grid',)


def test_only_the_entries_a_model_declares_derived_may_be_missing():
    state = {'weight': torch.full((2,), 3.0)}
    model = Scaler(declares_derived=True)
    assert load_weights(model, state)['missing'] == []
    assert torch.equal(model.weight, state['weight']) and torch.equal(model.grid, torch.arange(2.0))
    with pytest.raises(CheckpointMismatchError, match='missing keys: grid'):
        load_weights(Scaler(declares_derived=False), state)


def test_mismatched_checkpoint_lists_missing_unexpected_and_shapes(release_state):
    state = dict(release_state)
    state.pop('conv_first.bias')
    state['extra.weight'] = torch.zeros(1)
    model = HAT(**{**fixture_options(NAME), 'embed_dim': 60, 'num_heads': [6, 6]})
    with pytest.raises(CheckpointMismatchError) as error:
        load_weights(model, state)
    message = str(error.value)
    assert 'missing keys: conv_first.bias' in message
    assert 'unexpected keys: extra.weight' in message
    assert 'conv_first.weight: checkpoint (48, 3, 3, 3) vs model (60, 3, 3, 3)' in message


def test_x4_from_x2_weights_loads_non_strictly(release_state):
    x2 = HAT(**{**fixture_options(NAME), 'upscale': 2}).state_dict()
    model = HAT(**fixture_options(NAME))
    with pytest.raises(CheckpointMismatchError, match='upsample.2'):
        load_weights(model, x2)
    report = load_weights(model, x2, strict=False)
    assert report['missing'] == ['upsample.2.weight', 'upsample.2.bias']
    assert torch.equal(model.conv_first.weight, x2['conv_first.weight'])


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'params': collections.OrderedDict(), 'hook': os.system}, path)
    with pytest.raises(CheckpointError, match='could run code'):
        read_state_dict(path)


@pytest.mark.parametrize(
    'content, match',
    [
        (b'not a checkpoint at all', 'cannot read checkpoint'),
        (b'', 'is empty'),
        (None, 'checkpoint not found'),
    ],
)
def test_unreadable_files_are_named(tmp_path, content, match):
    path = tmp_path / 'broken.pth'
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as error:
        read_state_dict(path)
    assert 'broken.pth' in str(error.value)


def test_non_state_dict_is_refused(tmp_path):
    path = tmp_path / 'opts.pth'
    torch.save({'iter': 5, 'optimizers': []}, path)
    with pytest.raises(CheckpointError, match='holds no state dict'):
        read_state_dict(path)


@pytest.mark.parametrize(
    'content, param_key, match',
    [
        (torch.zeros(3), 'auto', 'holds a Tensor, not a state dict'),
        ([{'w': torch.zeros(1)}], 'auto', 'holds a list, not a state dict'),
        ({'params': torch.zeros(3)}, 'params', "entry 'params' holds a Tensor"),
    ],
)
def test_checkpoints_that_are_not_mappings_are_refused(tmp_path, content, param_key, match):
    path = tmp_path / 'odd.pth'
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(path, param_key)


@pytest.mark.parametrize('name', ['NET.SAFETENSORS', 'net.sft'])
def test_safetensors_suffix_in_any_case(release_state, tmp_path, name):
    save_file({key: value.contiguous() for key, value in release_state.items()}, str(tmp_path / name))
    state = read_state_dict(tmp_path / name)
    assert state.keys() == release_state.keys() and all(torch.equal(state[k], release_state[k]) for k in state)


def test_atomic_save_gives_the_permissions_of_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_save({'params': {'w': torch.ones(2)}}, tmp_path / 'net.pth')
    finally:
        os.umask(previous)
    assert (tmp_path / 'net.pth').stat().st_mode & 0o777 == 0o640


def test_atomic_save_into_an_unusable_folder_names_it(tmp_path):
    blocker = tmp_path / 'models'
    blocker.write_bytes(b'a file where the folder should be')
    with pytest.raises(OutputError, match='cannot create folder .*models'):
        atomic_save({'params': {}}, blocker / 'net.pth')
    target = tmp_path / 'net.pth'
    target.mkdir()
    with pytest.raises(OutputError, match='cannot write .*net.pth'):
        atomic_save({'params': {}}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['models', 'net.pth'] and not any(target.iterdir())


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / 'net_g_latest.pth'
    atomic_save({'params': {'w': torch.ones(2)}}, path)

    def failing_save(obj, target):
        target.write(b'partial')
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({'params': {'w': torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)['params']['w'], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ['net_g_latest.pth']


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_non_finite_weights_are_refused_naming_the_file_and_tensor(release_state, tmp_path, value, suffix):
    state = {key: tensor.clone().contiguous() for key, tensor in release_state.items()}
    state['layers.0.residual_group.blocks.0.attn.proj.weight'][3, 5] = value
    path = tmp_path / f'diverged{suffix}'
    if suffix == '.pth':
        torch.save({'params_ema': state}, path)
    else:
        save_file(state, str(path))
    with pytest.raises(
        CheckpointError,
        match=rf'^{path}: tensor layers\.0\.residual_group\.blocks\.0\.attn\.proj'
        r'\.weight holds NaN or infinite values',
    ):
        load_weights(HAT(**fixture_options(NAME)), path)


def test_training_refuses_a_non_finite_pretrained_network(sr_data, tmp_path):
    network = HAT(**{key: value for key, value in TINY_HAT.items() if key != 'type'}).state_dict()
    network['conv_last.bias'][0] = float('nan')
    path = tmp_path / 'pretrained.pth'
    torch.save({'params': network}, path)
    with pytest.raises(CheckpointError, match=f'^{path}: tensor conv_last.bias holds NaN or infinite values'):
        in_process_model(
            sr_data, tmp_path, path={'pretrain_network_g': str(path), 'strict_load_g': True, 'resume_state': None}
        )

"""`hat-basicsr convert`, safe loading, and interoperability with spandrel 0.4.2 (chaiNNer, ComfyUI)."""

import json
import os

import pytest
import spandrel
import torch
import yaml
from safetensors import safe_open

from hat_basicsr import HAT
from hat_basicsr.archs.hat_config import METADATA_KEY, infer_hat_options
from hat_basicsr.cli import convert, info
from hat_basicsr.cli.model_source import load_model

from filesystems import simulate_full_disk, tmpfs
from helpers import TINY_OPTIONS, run_command
from reference_fixtures import fixture_cases, fixture_options, fixture_weights_path

BASE = {**TINY_OPTIONS, 'depths': [2]}
CONFIGS = {
    'x2': {'upscale': 2},
    'x3-two-layers': {'upscale': 3, 'embed_dim': 24, 'depths': [1, 2], 'num_heads': [2, 3], 'window_size': 8},
    'x4-gray-identity': {
        'upscale': 4,
        'in_chans': 1,
        'resi_connection': 'identity',
        'overlap_ratio': 0.25,
        'window_size': 8,
    },
}


class Payload:
    """Stands for any object a malicious pickle could construct."""


def trained_like(overrides):
    """A HAT with all parameters moved off their init, saved as BasicSR's training does."""
    torch.manual_seed(0)
    model = HAT(**{**BASE, **overrides}).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    state = model.state_dict()
    ema = {key: value.clone() for key, value in state.items()}
    return model, {'params': {key: torch.zeros_like(value) for key, value in state.items()}, 'params_ema': ema}


def spandrel_output(path, lq):
    descriptor = spandrel.ModelLoader().load_from_file(str(path))
    assert descriptor.architecture.id == 'HAT'
    descriptor.model.eval()
    with torch.no_grad():
        return descriptor.model(lq), descriptor


@pytest.mark.parametrize('config', list(CONFIGS))
def test_training_checkpoints_and_converted_files_load_in_spandrel(config, tmp_path, capsys):
    model, checkpoint = trained_like(CONFIGS[config])
    source = tmp_path / 'net_g_latest.pth'
    torch.save(checkpoint, source)
    lq = torch.rand(1, model.in_chans, 11, 14)  # not a multiple of the window: both sides pad themselves
    with torch.no_grad():
        expected = model(lq)
    for name in ('net.safetensors', 'net.pth'):
        assert run_command(convert.add_parser, ['convert', str(source), str(tmp_path / name)]) == 0
    assert capsys.readouterr().err == ''  # release values for everything no tensor records: no warning
    for path in (source, tmp_path / 'net.safetensors', tmp_path / 'net.pth'):
        output, descriptor = spandrel_output(path, lq)
        assert descriptor.scale == model.upscale and descriptor.input_channels == model.in_chans
        assert (output - expected).abs().max() < 1e-5, path.name
        ours, scale = load_model(path, 'cpu')
        with torch.no_grad():
            assert (ours(lq) - expected).abs().max() < 1e-6
        assert scale == model.upscale


def test_converted_files_layout_and_metadata(tmp_path):
    _, checkpoint = trained_like(CONFIGS['x3-two-layers'])
    # A torch.compile'd, DDP-wrapped model without the derived index buffers: spandrel cannot detect it.
    state = {
        f'module._orig_mod.{key}': value
        for key, value in checkpoint['params_ema'].items()
        if not key.startswith('relative_position_index')
    }
    source = tmp_path / 'compiled.pth'
    torch.save({'params': state}, source)
    with pytest.raises(Exception):  # noqa: B017  (spandrel raises no documented type when detection fails)
        spandrel.ModelLoader().load_from_file(str(source))

    safetensors_path, pth_path = tmp_path / 'out.safetensors', tmp_path / 'out.pth'
    options = convert.convert(source, safetensors_path)
    convert.convert(safetensors_path, pth_path, pth_key='params')
    with safe_open(str(safetensors_path), framework='pt') as handle:
        assert json.loads(handle.metadata()[METADATA_KEY]) == options
        keys = list(handle.keys())
    assert options == infer_hat_options(checkpoint['params_ema'])
    assert 'relative_position_index_SA' in keys and 'relative_position_index_OCA' in keys
    assert not any(key.startswith(('module.', '_orig_mod.')) for key in keys)
    written = torch.load(pth_path, weights_only=True)
    assert list(written) == ['params']
    for key, value in checkpoint['params_ema'].items():
        assert torch.equal(written['params'][key], value)
    spandrel.ModelLoader().load_from_file(str(safetensors_path))


def test_options_no_tensor_records_come_from_an_option_file_and_are_warned_about(tmp_path, capsys):
    """The gray fixture uses img_range 255 and conv_scale 0.02: kept in safetensors metadata, which
    our loader reads and spandrel does not."""
    name = 'hat_tiny_x2_gray_identity'
    option_file = tmp_path / 'train.yml'
    option_file.write_text(yaml.safe_dump({'network_g': {'type': 'HAT', **fixture_options(name)}}))
    target = tmp_path / 'gray.safetensors'
    assert (
        run_command(
            convert.add_parser, ['convert', str(fixture_weights_path(name)), str(target), '--options', str(option_file)]
        )
        == 0
    )
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2
    assert 'img_range=255.0' in ' '.join(warnings) and 'conv_scale=0.02' in ' '.join(warnings)

    ((lq, expected),) = fixture_cases(name)[:1]
    ours, _ = load_model(target, 'cpu')
    spandrel_out, _ = spandrel_output(target, lq)
    with torch.no_grad():
        assert (ours(lq) - expected).abs().max() < 1e-5
    assert (spandrel_out - expected).abs().max() > 1e-3


def test_training_size_that_turns_shifts_off_is_warned_about(tmp_path, capsys):
    model, checkpoint = trained_like({'img_size': 8, 'window_size': 8})
    source, option_file = tmp_path / 'net.pth', tmp_path / 'train.yml'
    torch.save(checkpoint, source)
    option_file.write_text(yaml.safe_dump({'network_g': {'type': 'HAT', **BASE, 'img_size': 8, 'window_size': 8}}))
    target = tmp_path / 'net.safetensors'
    assert run_command(convert.add_parser, ['convert', str(source), str(target), '--options', str(option_file)]) == 0
    assert 'img_size=8 <= window_size=8 turns the shifted windows off' in capsys.readouterr().err
    lq = torch.rand(1, 3, 16, 16)
    ours, _ = load_model(target, 'cpu')
    spandrel_out, _ = spandrel_output(target, lq)
    with torch.no_grad():
        assert (ours(lq) - model(lq)).abs().max() < 1e-6
        assert (spandrel_out - model(lq)).abs().max() > 1e-4


def test_pickles_with_arbitrary_objects_are_refused(tmp_path, capsys):
    _, checkpoint = trained_like(CONFIGS['x2'])
    source = tmp_path / 'suspicious.pth'
    torch.save({**checkpoint, 'payload': Payload()}, source)
    target = tmp_path / 'out.safetensors'
    assert run_command(convert.add_parser, ['convert', str(source), str(target)]) == 2
    error = capsys.readouterr().err
    assert error.count('\n') == 1 and 'suspicious.pth' in error and 'could run code' in error
    assert not target.exists()


@pytest.mark.parametrize('problem', ['extension', 'exists', 'not-hat'])
def test_convert_refuses_bad_requests_in_one_line(problem, tmp_path, capsys):
    source = tmp_path / 'net.pth'
    _, checkpoint = trained_like(CONFIGS['x2'])
    torch.save({'params': {'conv.weight': torch.zeros(1)}} if problem == 'not-hat' else checkpoint, source)
    target = tmp_path / ('net.onnx' if problem == 'extension' else 'out.safetensors')
    if problem == 'exists':
        target.write_bytes(b'keep')
    assert run_command(convert.add_parser, ['convert', str(source), str(target)]) == 2
    error = capsys.readouterr().err
    assert error.count('\n') == 1
    assert {'extension': 'unknown output format', 'exists': '--force', 'not-hat': 'not a HAT'}[problem] in error
    assert problem != 'exists' or target.read_bytes() == b'keep'


def test_options_that_do_not_fit_the_weights_name_both_files(tmp_path, capsys):
    _, checkpoint = trained_like(CONFIGS['x2'])
    source, option_file = tmp_path / 'net.pth', tmp_path / 'wrong.yml'
    torch.save(checkpoint, source)
    option_file.write_text(yaml.safe_dump({'network_g': {'type': 'HAT', **BASE, 'upscale': 2, 'mlp_ratio': 4}}))
    target = tmp_path / 'out.safetensors'
    assert run_command(convert.add_parser, ['convert', str(source), str(target), '--options', str(option_file)]) == 2
    error = capsys.readouterr().err
    assert 'net.pth with the network options of' in error and 'wrong.yml' in error and 'shape differences' in error
    assert not target.exists()


@pytest.mark.parametrize('name', ['NET.SAFETENSORS', 'net.sft'])
def test_safetensors_suffixes_in_any_case_convert_and_load(name, tmp_path):
    model, checkpoint = trained_like(CONFIGS['x2'])
    source = tmp_path / 'net.pth'
    torch.save(checkpoint, source)
    assert run_command(convert.add_parser, ['convert', str(source), str(tmp_path / name)]) == 0
    loaded, scale = load_model(tmp_path / name, 'cpu')
    lq = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert scale == 2 and torch.equal(loaded(lq), model(lq))
    with safe_open(str(tmp_path / name), framework='pt') as handle:
        assert METADATA_KEY in handle.metadata()


def test_convert_into_an_unusable_folder_exits_2(tmp_path, capsys):
    _, checkpoint = trained_like(CONFIGS['x2'])
    source = tmp_path / 'net.pth'
    torch.save(checkpoint, source)
    assert run_command(convert.add_parser, ['convert', str(source), str(source / 'out.pth')]) == 2
    error = capsys.readouterr().err
    assert error.count('\n') == 1 and 'cannot create folder' in error and 'Traceback' not in error


def converted_source(tmp_path):
    _, checkpoint = trained_like(CONFIGS['x2'])
    source = tmp_path / 'source.pth'
    torch.save(checkpoint, source)
    return source


def assert_one_line_and_nothing_written(capsys, target, reason):
    error = capsys.readouterr().err
    assert error == f'hat-basicsr convert: error: cannot write {target}: {reason}\n'
    assert list(target.parent.iterdir()) == []


@pytest.mark.parametrize('name', ['net.pth', 'net.safetensors'])
def test_convert_onto_a_full_filesystem_is_one_line_and_leaves_no_file(name, tmp_path, capsys):
    source = converted_source(tmp_path)
    with tmpfs(tmp_path / 'disk', size=64 * 1024) as disk:
        # Given file names, torch.save raises "RuntimeError: [enforce fail ...]" and safetensors a SafetensorError.
        assert run_command(convert.add_parser, ['convert', str(source), str(disk / name)]) == 2
        assert_one_line_and_nothing_written(capsys, disk / name, 'No space left on device')


@pytest.mark.parametrize('name', ['net.pth', 'net.safetensors'])
def test_convert_when_the_kernel_refuses_writes_is_one_line_and_leaves_no_file(name, tmp_path, capsys, monkeypatch):
    source = converted_source(tmp_path)
    (tmp_path / 'out').mkdir()
    simulate_full_disk(monkeypatch)
    assert run_command(convert.add_parser, ['convert', str(source), str(tmp_path / 'out' / name)]) == 2
    assert_one_line_and_nothing_written(capsys, tmp_path / 'out' / name, 'No space left on device')


@pytest.mark.parametrize('name', ['net.pth', 'net.safetensors'])
def test_converted_files_get_the_permissions_of_the_umask(name, tmp_path):
    source = converted_source(tmp_path)
    previous = os.umask(0o027)
    try:
        assert run_command(convert.add_parser, ['convert', str(source), str(tmp_path / name)]) == 0
    finally:
        os.umask(previous)
    assert (tmp_path / name).stat().st_mode & 0o777 == 0o640  # safetensors' own writer gives 0600


@pytest.mark.parametrize('command', ['convert', 'info'])
def test_non_finite_weights_are_refused_in_one_line(command, tmp_path, capsys):
    _, checkpoint = trained_like(CONFIGS['x2'])
    checkpoint['params_ema']['conv_first.weight'][0, 0, 1, 1] = float('nan')
    source = tmp_path / 'diverged.pth'
    torch.save(checkpoint, source)
    target = tmp_path / 'out.safetensors'
    arguments = [str(source), str(target)] if command == 'convert' else [str(source)]
    assert run_command({'convert': convert, 'info': info}[command].add_parser, [command, *arguments]) == 2
    error = capsys.readouterr().err
    assert error.count('\n') == 1 and f'{source}: tensor conv_first.weight holds NaN or infinite values' in error
    assert not target.exists()

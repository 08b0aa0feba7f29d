"""Option files are checked, before BasicSR acts on them, for what BasicSR would silently misread;
the train/test entry points report bad options, data and checkpoints in one line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from hat_basicsr.errors import ImageError, OptionFileError
from hat_basicsr.option_check import check_options, option_file_argument
from hat_basicsr.train import main as train_main
from hat_basicsr.utils.user_errors import user_error_message

from helpers import run_python, train_options, write_options

OPTIONS = Path(__file__).resolve().parents[1] / 'options'


@pytest.mark.parametrize('path', sorted(OPTIONS.rglob('*.yml')), ids=lambda p: str(p.relative_to(OPTIONS)))
def test_shipped_option_files_pass_without_warnings(path):
    opt = yaml.safe_load(path.read_text())
    assert check_options(opt, str(path), is_train=path.relative_to(OPTIONS).parts[0] == 'train') == []


def test_an_exponent_without_a_dot_is_refused_with_the_fix(sr_data):
    opt = train_options(sr_data, 'lr')
    opt['train']['optim_g']['lr'] = '2e-4'  # what YAML 1.1 makes of `lr: 2e-4`
    with pytest.raises(OptionFileError, match=r"train\.optim_g\.lr: '2e-4' is read as a string .* 2\.0e-4"):
        check_options(opt, 'x.yml', is_train=True)


@pytest.mark.parametrize(
    'key, suggestion',
    [('pretrained_network_g', 'pretrain_network_g'), ('strict_loads', 'strict_load_g'), ('my_folder', None)],
)
def test_unknown_path_entries_are_refused(sr_data, key, suggestion):
    opt = train_options(sr_data, 'paths')
    opt['path'][key] = 'weights/net.pth'
    with pytest.raises(OptionFileError, match=f'unknown entry path.{key}') as error:
        check_options(opt, 'x.yml', is_train=True)
    assert (f"did you mean '{suggestion}'" in str(error.value)) == (suggestion is not None)


def test_testing_without_weights_is_refused(sr_data):
    opt = train_options(sr_data, 'test')
    with pytest.raises(OptionFileError, match='randomly initialised'):
        check_options(opt, 'x.yml', is_train=False)
    opt['path']['pretrain_network_g'] = 'net.pth'
    assert check_options(opt, 'x.yml', is_train=False) == []


def test_unknown_train_entries_are_warned_about(sr_data):
    opt = train_options(sr_data, 'ema')
    opt['train']['ema_decy'] = opt['train'].pop('ema_decay')
    opt['train']['my_custom_weight'] = 0.5
    warnings = check_options(opt, 'x.yml', is_train=True)
    assert len(warnings) == 2
    assert 'train.ema_decy is not read' in warnings[0] and "did you mean 'ema_decay'" in warnings[0]
    assert 'my_custom_weight' in warnings[1] and 'did you mean' not in warnings[1]


def test_option_file_argument_forms():
    assert option_file_argument(['-opt', 'a.yml', '--auto_resume']) == 'a.yml'
    assert option_file_argument(['--debug', '-opt=b.yml']) == 'b.yml'
    assert option_file_argument(['--auto_resume']) is None


def test_worker_errors_are_summarised_to_their_message():
    error = ImageError(
        'Caught ImageError in DataLoader worker process 0.\nOriginal Traceback (most '
        'recent call last):\n  File "x.py", line 1\n'
        'hat_basicsr.errors.ImageError: cannot decode data/a.png\n'
    )
    assert user_error_message(error) == 'ImageError: cannot decode data/a.png'
    assert user_error_message(OptionFileError('tile.tile_size: ...')) == 'OptionFileError: tile.tile_size: ...'


@pytest.mark.parametrize(
    'error',
    [
        ValueError('plain'),
        KeyError('dataroot_gt'),
        TypeError('a bug'),
        ZeroDivisionError('division by zero'),
        AssertionError(),
        NameError('a bug'),
        OSError('not a missing file'),
    ],
)
def test_other_errors_keep_their_traceback(error):
    assert user_error_message(error) is None


@pytest.mark.parametrize('damage, workers', [('truncated', 0), ('truncated', 1), ('empty', 0), ('empty', 1)])
def test_a_corrupt_image_in_a_paired_folder_is_reported_in_one_line(sr_data, tmp_path, damage, workers):
    import shutil

    folders = {name: tmp_path / name for name in ('HR', 'LR')}
    for name, folder in folders.items():
        shutil.copytree(sr_data[f'train_{name.lower()}'], folder)
    broken = sorted(folders['LR'].iterdir())[0]
    broken.write_bytes(broken.read_bytes()[:300] if damage == 'truncated' else b'')
    dataset = {
        'type': 'PairedImageDataset',
        'dataroot_gt': str(folders['HR']),
        'dataroot_lq': str(folders['LR']),
        'io_backend': {'type': 'disk'},
    }
    opt = train_options(sr_data, f'{damage}{workers}', val_freq=None, train_dataset=dataset)
    opt['datasets']['train'].update(num_worker_per_gpu=workers, use_hflip=False, use_rot=False, batch_size_per_gpu=4)
    options = write_options(tmp_path / 'opt.yml', opt)
    proc = run_python(['-m', 'hat_basicsr.train', '-opt', str(options)], cwd=tmp_path, check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    problem = {'empty': ': it is empty (0 bytes)', 'truncated': ' (truncated or corrupt file, or not an image)'}[damage]
    assert last == f'hat_basicsr.train: error: ImageError: cannot decode image {broken}{problem}'


def test_train_refuses_a_misspelled_path_entry_before_creating_anything(sr_data, tmp_path, monkeypatch, capsys):
    opt = train_options(sr_data, 'misspelled')
    opt['path']['pretrained_network_g'] = 'weights/HAT_SRx2.pth'
    options = write_options(tmp_path / 'opt.yml', opt)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_status:
        train_main(['-opt', str(options)])
    assert 'unknown entry path.pretrained_network_g' in str(exit_status.value.code)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['opt.yml']


@pytest.mark.parametrize(
    'edit, refusal',
    [
        (
            lambda network: network.update(embed_dims=network.pop('embed_dim')),
            "network_g.embed_dims is not an option of HAT (did you mean 'embed_dim'?)",
        ),
        (
            lambda network: network.update(embed_dim=25, depths=[1, 1], num_heads=[3, 3]),
            'network_g.embed_dim: got 25, expected a multiple of every num_heads entry (3 does not divide it)',
        ),
        (lambda network: network.update(window_size=1), 'network_g.window_size: got 1, expected an integer >= 2'),
        (lambda network: network.update(depths=[0]), 'network_g.depths: got [0], expected a list of integers >= 1'),
    ],
    ids=['unknown', 'cross-rule', 'bound', 'list'],
)
def test_train_refuses_a_bad_network_argument_before_creating_anything(sr_data, tmp_path, edit, refusal):
    """HAT's declared arguments and the rules between them are checked with the option file, so the
    one-line refusal names the option and no experiment folder exists yet."""
    opt = copy.deepcopy(train_options(sr_data, 'bad_arg'))
    edit(opt['network_g'])
    options = write_options(tmp_path / 'opt.yml', opt)
    proc = run_python(['-m', 'hat_basicsr.train', '-opt', str(options)], cwd=tmp_path, check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f'hat_basicsr.train: error: OptionFileError: {options}: {refusal}')
    assert sorted(path.name for path in tmp_path.iterdir()) == ['opt.yml']


def test_a_discriminator_is_checked_against_its_signature(sr_data):
    """network_d (BasicSR's UNetDiscriminatorSN declares no OPTIONS) is checked against the
    arguments its constructor takes."""
    opt = copy.deepcopy(train_options(sr_data, 'network_d'))
    opt['network_d'] = {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feats': 64}
    with pytest.raises(OptionFileError, match=r'network_d\.num_feats is not an option of UNetDiscriminatorSN'):
        check_options(opt, 'opt.yml', is_train=True)
    opt['network_d'] = {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'skip_connection': 'yes'}
    with pytest.raises(OptionFileError, match=r"network_d\.skip_connection: got 'yes', expected true or false"):
        check_options(opt, 'opt.yml', is_train=True)
    opt['network_d'] = {'type': 'UNetDiscriminatorSN'}
    with pytest.raises(OptionFileError, match=r'network_d\.num_in_ch is missing; UNetDiscriminatorSN needs it'):
        check_options(opt, 'opt.yml', is_train=True)


@pytest.mark.parametrize(
    'key, value, refusal',
    [
        ('tile', {'tile_size': 0}, 'tile.tile_size: got 0, expected a positive integer'),
        ('tile', 64, 'tile: got 64, expected a mapping'),
        ('acceleration', {'fp16': True}, "acceleration.fp16 is not an option of acceleration (did you mean 'bf16'?)"),
        ('acceleration', {'compile': 'max'}, "acceleration.compile: got 'max', expected true, false or a mapping"),
    ],
)
def test_tile_and_acceleration_are_checked_with_the_option_file(sr_data, key, value, refusal):
    opt = copy.deepcopy(train_options(sr_data, 'sections'))
    opt[key] = value
    with pytest.raises(OptionFileError) as error:
        check_options(opt, 'opt.yml', is_train=True)
    assert str(error.value).startswith(f'opt.yml: {refusal}')

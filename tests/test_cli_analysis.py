"""The analysis subcommands `hat-basicsr lam` and `hat-basicsr features`."""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from skimage.data import astronaut

import hat_basicsr  # noqa: F401  (makes `import basicsr` work)
from hat_basicsr.analysis.visual import GAP, HEADER
from hat_basicsr.cli import main as cli_main  # the `hat-basicsr` console script
from hat_basicsr.cli.analysis_inputs import model_input

from basicsr.utils.color_util import rgb2ycbcr

FIXTURES = Path(__file__).parent / 'fixtures'


@pytest.fixture(scope='module')
def photo(tmp_path_factory) -> Path:
    """scikit-image's astronaut photo, downsampled to 16 x 16."""
    path = tmp_path_factory.mktemp('images') / 'astronaut.png'
    cv2.imwrite(str(path), cv2.resize(astronaut()[..., ::-1], (16, 16), interpolation=cv2.INTER_AREA))
    return path


@pytest.fixture(scope='module')
def edsr_options(tmp_path_factory) -> Path:
    """A BasicSR option file for a tiny randomly initialised EDSR x2, weights saved with torch.save."""
    from basicsr.archs import build_network

    folder = tmp_path_factory.mktemp('edsr')
    network = dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2)
    torch.manual_seed(0)
    torch.save({'params': build_network(dict(network)).state_dict()}, folder / 'edsr.pth')
    options = {
        'scale': 2,
        'network_g': network,
        'path': {'pretrain_network_g': str(folder / 'edsr.pth'), 'param_key_g': 'params'},
    }
    (folder / 'edsr.yml').write_text(yaml.safe_dump(options))
    return folder / 'edsr.yml'


def panel_shape(side: int) -> tuple:
    """Shape of the LAM panel for a square input of `side` pixels, default zoom, scale <= 10."""
    tile = side * max(1, math.ceil(160 / side))
    return (HEADER + tile, 3 * tile + 2 * GAP, 3)


def test_cli_lam_on_an_option_file_of_a_basicsr_arch(photo, edsr_options, tmp_path, capsys):
    out = tmp_path / 'edsr_lam.png'
    status = cli_main(
        [
            'lam',
            str(photo),
            '-m',
            str(edsr_options),
            '--box',
            '8',
            '12',
            '--size',
            '12',
            '--steps',
            '6',
            '--device',
            'cpu',
            '-o',
            str(out),
        ]
    )
    assert status == 0
    di = float(re.search(r'DI (\d+\.\d+)', capsys.readouterr().out).group(1))
    assert 0 < di < 100
    assert cv2.imread(str(out)).shape == panel_shape(16)


def test_cli_lam_on_a_hat_checkpoint(photo, tmp_path, capsys):
    out = tmp_path / 'hat_lam.png'
    status = cli_main(
        [
            'lam',
            str(photo),
            '-m',
            str(FIXTURES / 'hat_tiny_x4_w8.pth'),
            '--box',
            '24',
            '24',
            '--steps',
            '4',
            '--batch',
            '5',
            '-o',
            str(out),
        ]
    )
    assert status == 0
    assert 'x4' in capsys.readouterr().out
    assert cv2.imread(str(out)).shape == panel_shape(16)


@pytest.mark.parametrize(
    'box, size, message',
    [
        (['30', '0'], '8', r'leaves the SR output \(32x32, W x H\): x must be in \[0, 24\]'),
        (['0', '-3'], '8', r'y must be in|y in \[0, 24\]'),
        (['0', '0'], '40', 'larger than the SR output'),
    ],
    ids=['right', 'above', 'too-large'],
)
def test_cli_lam_bad_box_exits_2_with_a_message(photo, edsr_options, tmp_path, capsys, box, size, message):
    out = tmp_path / 'never.png'
    status = cli_main(['lam', str(photo), '-m', str(edsr_options), '--box', *box, '--size', size, '-o', str(out)])
    err = capsys.readouterr().err
    assert status == 2
    assert re.search(message, err) and 'Traceback' not in err
    assert not out.exists()


def test_cli_unreadable_image_exits_2(edsr_options, tmp_path, capsys):
    fake = tmp_path / 'not_an_image.png'
    fake.write_text('hello')
    for command in (['lam', '--box', '0', '0'], ['features']):
        status = cli_main([command[0], str(fake), '-m', str(edsr_options), *command[1:], '-o', str(tmp_path / 'x.png')])
        assert status == 2
        assert 'not_an_image.png' in capsys.readouterr().err


def test_cli_features(photo, edsr_options, tmp_path, capsys):
    out = tmp_path / 'features.png'
    assert cli_main(['features', str(photo), '-m', str(edsr_options), '--channels', '0', '3', '-o', str(out)]) == 0
    assert 'body.0, body.1' in capsys.readouterr().out
    tile = 16 * math.ceil(128 / 16)
    assert cv2.imread(str(out)).shape == (2 * (HEADER + tile) + GAP, 2 * tile + GAP, 3)
    assert cli_main(['features', str(photo), '-m', str(edsr_options), '--channels', '8', '-o', str(out)]) == 2
    assert 'this stage has 8 channels' in capsys.readouterr().err


@pytest.mark.parametrize('command', [['lam', '--box', '0', '0'], ['features']])
def test_cli_output_name_opencv_cannot_write_exits_2_before_computing(
    photo, edsr_options, tmp_path, capsys, monkeypatch, command
):
    def never(*args, **kwargs):
        raise AssertionError('computed before checking the output name')

    monkeypatch.setattr('hat_basicsr.cli.model_source.build_network', never)
    for name in ('panel.xyz', 'panel'):
        status = cli_main([command[0], str(photo), '-m', str(edsr_options), *command[1:], '-o', str(tmp_path / name)])
        error = capsys.readouterr().err
        assert status == 2 and error.count('\n') == 1 and 'cannot write images with this extension' in error
    assert not any(tmp_path.iterdir())


def test_cli_features_refuses_negative_channels(photo, edsr_options, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        cli_main(['features', str(photo), '-m', str(edsr_options), '--channels', '-1', '-o', str(tmp_path / 'f.png')])
    assert exit_status.value.code == 2 and 'must be >= 0, got -1' in capsys.readouterr().err


def test_luminance_models_get_y_as_basicsr_computes_it():
    rgb = np.random.default_rng(0).random((6, 7, 3), dtype=np.float32)
    for image in (rgb, rgb[..., :1]):
        expected = rgb2ycbcr(np.repeat(image, 3 // image.shape[2], axis=2), y_only=True)
        assert torch.equal(model_input(image, 1)[0], torch.from_numpy(expected))


def test_cli_truncated_image_is_reported_without_opencv_noise(photo, edsr_options, tmp_path, capfd):
    truncated = tmp_path / 'cut.png'
    truncated.write_bytes(photo.read_bytes()[:200])
    status = cli_main(['features', str(truncated), '-m', str(edsr_options), '-o', str(tmp_path / 'f.png')])
    error = capfd.readouterr().err
    assert status == 2 and error.count('\n') == 1 and 'cut.png' in error and 'WARN' not in error

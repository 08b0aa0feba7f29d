"""hat_basicsr.test on saved weights, tiled vs whole-image inference, weight loading and option
errors of HATModel."""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import pytest
import torch
from safetensors.torch import save_file

from hat_basicsr.errors import CheckpointMismatchError, OptionFileError
from hat_basicsr.utils.defaults import DEFAULT_TILE_PAD
from hat_basicsr.utils.tiling import TileOptions

from helpers import SCALE, TINY_HAT, in_process_model, read_log, run_python, val_dataset, write_options


def _test_options(data, name: str, weights: Path, **network) -> dict:
    dataset = {k: v for k, v in val_dataset(data).items() if k not in ('phase', 'scale')}
    return {
        'name': name,
        'model_type': 'HATModel',
        'scale': SCALE,
        'num_gpu': 0,
        'manual_seed': 0,
        'datasets': {'test_1': dataset},
        'network_g': {**TINY_HAT, **network},
        'path': {'pretrain_network_g': str(weights), 'strict_load_g': True, 'param_key_g': 'params_ema'},
        'val': {
            'save_img': True,
            'suffix': None,
            'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': True}},
        },
    }


def test_test_py_writes_images_and_metrics_under_cwd(sr_data, trained_checkpoint, tmp_path):
    options = write_options(tmp_path / 'test.yml', _test_options(sr_data, 'tiny_test', trained_checkpoint))
    run_python(['-m', 'hat_basicsr.test', '-opt', str(options)], cwd=tmp_path)
    results = tmp_path / 'results' / 'tiny_test'
    images = sorted((results / 'visualization' / 'tiny_val').glob('*.png'))
    assert [p.name for p in images] == ['img000_tiny_test.png', 'img001_tiny_test.png']
    assert cv2.imread(str(images[0])).shape == cv2.imread(str(sr_data['val_hr'] / 'img000.png')).shape
    log = read_log(results, 'test')
    assert 'Validation tiny_val' in log and '# psnr:' in log
    assert 'Best' not in log and 'tiny_test iter' not in log  # BasicSR: Best: ... @ tiny_test iter


@pytest.mark.parametrize('problem', ['x4 model, x2 weights', 'unknown arch', 'missing weights'])
def test_bad_options_give_a_clear_error_not_a_traceback(sr_data, trained_checkpoint, tmp_path, problem):
    opt = _test_options(sr_data, 'bad', trained_checkpoint)
    if problem == 'x4 model, x2 weights':
        opt['network_g']['upscale'], opt['scale'] = 4, 4
        expected = [str(trained_checkpoint), 'upsample.2']
    elif problem == 'unknown arch':
        opt['network_g']['type'] = 'HATX'
        expected = ["No object named 'HATX'"]
    else:
        opt['path']['pretrain_network_g'] = str(tmp_path / 'nowhere.pth')
        expected = ['checkpoint not found', 'nowhere.pth']
    options = write_options(tmp_path / 'bad.yml', opt)
    proc = run_python(['-m', 'hat_basicsr.test', '-opt', str(options)], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert all(text in proc.stderr for text in expected), proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / ((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean().item())


def _super_resolve(model, lq: torch.Tensor) -> torch.Tensor:
    model.feed_data({'lq': lq})
    model.test()
    return model.output


@pytest.mark.parametrize(
    'tile, border',
    [
        ({'tile_size': 16}, 0),
        ({'tile_size': 12, 'tile_pad': 16}, 0),
        # any size works; off the window grid, tiles at the bottom/right borders pad differently
        ({'tile_size': 11, 'tile_pad': 16}, 10),
    ],
)
def test_tiled_output_is_close_to_whole_image_output(sr_data, trained_checkpoint, tmp_path, caplog, tile, border):
    path = {'pretrain_network_g': str(trained_checkpoint), 'strict_load_g': True}
    whole_model = in_process_model(sr_data, tmp_path, is_train=False, path=dict(path))
    with caplog.at_level('WARNING', logger='basicsr'):
        tiled_model = in_process_model(sr_data, tmp_path, is_train=False, path=dict(path), tile=tile)
    assert tiled_model.tile == TileOptions(**{'tile_pad': DEFAULT_TILE_PAD, **tile})
    assert ('not multiples of window_size' in caplog.text) == (border > 0)
    image = cv2.imread(str(sr_data['train_lr'] / 'img000.png'))
    lq = torch.from_numpy(cv2.resize(image, (45, 38))[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    whole = _super_resolve(whole_model, lq)
    tiled = _super_resolve(tiled_model, lq)
    assert tiled.shape == whole.shape == (1, 3, 38 * SCALE, 45 * SCALE)
    inner = (..., slice(0, (38 - border) * SCALE), slice(0, (45 - border) * SCALE))
    assert _psnr(tiled[inner], whole[inner]) > 50


@pytest.mark.parametrize(
    'tile, message',
    [
        ({'tile_pad': 4}, 'tile.tile_size is missing'),
        ({'tile_size': 0}, 'tile.tile_size: got 0, expected a positive integer'),
        ({'tile_size': 32.0}, 'tile.tile_size: got 32.0, expected a positive integer'),
        ({'tile_size': 32, 'tile_pad': -1}, 'tile.tile_pad: got -1, expected a non-negative integer'),
        (
            {'tile_size': 32, 'overlap': 4},
            "tile.overlap is not an option of tiled inference; it takes ['tile_pad', 'tile_size']",
        ),
        (64, 'tile: got 64, expected a mapping'),
    ],
)
def test_bad_tile_options_are_named(sr_data, tmp_path, tile, message):
    with pytest.raises(OptionFileError, match=re.escape(message)):
        in_process_model(sr_data, tmp_path, tile=tile)


def test_num_gpu_without_cuda_is_refused(sr_data, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(OptionFileError, match='CUDA is not available'):
        in_process_model(sr_data, tmp_path, num_gpu=1)


def _load_into_new_model(sr_data, tmp_path, weights: Path, strict: bool = True, **network):
    path = {'pretrain_network_g': str(weights), 'strict_load_g': strict}
    network_g = {**TINY_HAT, **network}
    return in_process_model(
        sr_data, tmp_path, is_train=False, path=path, network_g=network_g, scale=network_g['upscale']
    )


@pytest.mark.parametrize('form', ['module_prefix', 'compile_prefix', 'safetensors', 'ema_only'])
def test_pretrained_weights_in_every_form(sr_data, trained_checkpoint, tmp_path, form):
    state = torch.load(trained_checkpoint, weights_only=True)['params']
    if form == 'safetensors':
        weights = tmp_path / 'weights.safetensors'
        save_file(state, str(weights))
    else:
        prefix = {'module_prefix': 'module.', 'compile_prefix': '_orig_mod.', 'ema_only': ''}[form]
        weights = tmp_path / 'weights.pth'
        key = 'params_ema' if form == 'ema_only' else 'params'  # model asks for 'params'
        torch.save({key: {prefix + name: value for name, value in state.items()}}, weights)
    model = _load_into_new_model(sr_data, tmp_path, weights)
    loaded = model.net_g.state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in state.items())


def test_x4_from_x2_weights_with_strict_load_false(sr_data, trained_checkpoint, tmp_path):
    state = torch.load(trained_checkpoint, weights_only=True)['params']
    model = _load_into_new_model(sr_data, tmp_path, trained_checkpoint, strict=False, upscale=4)
    loaded = model.net_g.state_dict()
    assert 'upsample.2.weight' in loaded and 'upsample.2.weight' not in state
    assert all(torch.equal(loaded[name], value) for name, value in state.items())
    with pytest.raises(CheckpointMismatchError, match='missing keys: upsample.2.weight'):
        _load_into_new_model(sr_data, tmp_path, trained_checkpoint, strict=True, upscale=4)

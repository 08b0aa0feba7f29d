"""`hat-basicsr upscale` on real photo crops in every supported format, depth and layout."""

import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageOps
from skimage import data

import hat_basicsr  # noqa: F401  (makes `import basicsr` work)
from hat_basicsr import HAT
from hat_basicsr.cli import upscale
from hat_basicsr.cli.model_source import load_model
from hat_basicsr.errors import SourceError
from hat_basicsr.utils.image_io import read_image, write_image

from basicsr.utils.color_util import rgb2ycbcr

from filesystems import tmpfs
from helpers import REPO_ROOT, TINY_OPTIONS, run_command, subprocess_env

TINY = {'upscale': 2, **TINY_OPTIONS}


def make_checkpoint(path, **overrides):
    torch.manual_seed(1)
    model = HAT(**{**TINY, **overrides}).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    torch.save({'params_ema': model.state_dict()}, path)
    return model


def forward(model, image):
    """What the tool should produce for an HxWxC float image: the model's output, clamped."""
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None])
    return out[0].clamp(0, 1).permute(1, 2, 0).numpy()


def bgr(photo, top, left, size=(20, 24)):
    return np.ascontiguousarray(photo[top : top + size[0], left : left + size[1], ::-1])


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp('upscale')
    model = make_checkpoint(root / 'tiny.pth')
    inputs = root / 'inputs'
    inputs.mkdir()
    astronaut, chelsea, coffee = data.astronaut(), data.chelsea(), data.coffee()
    cv2.imwrite(str(inputs / 'deep.png'), bgr(astronaut, 40, 180).astype(np.uint16) * 257 + 3)
    alpha = np.tile(np.linspace(0, 255, 24, dtype=np.float32), (20, 1)).astype(np.uint8)
    cv2.imwrite(str(inputs / 'cutout.png'), np.dstack([bgr(chelsea, 60, 100), alpha]))
    cv2.imwrite(str(inputs / 'gray.jpg'), cv2.cvtColor(bgr(coffee, 100, 100), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(inputs / 'photo.webp'), bgr(coffee, 200, 300))
    cv2.imwrite(str(inputs / 'scan.tif'), bgr(astronaut, 300, 300))
    cv2.imwrite(str(inputs / 'old.bmp'), bgr(chelsea, 10, 10))
    whole = cv2.imencode('.png', bgr(astronaut, 0, 0))[1].tobytes()
    (inputs / 'broken.png').write_bytes(whole[: len(whole) // 2])
    return {'root': root, 'model': model, 'inputs': inputs, 'checkpoint': root / 'tiny.pth'}


@pytest.fixture(scope='module')
def upscaled(workspace):
    output = workspace['root'] / 'out'
    status = run_command(
        upscale.add_parser,
        ['upscale', str(workspace['inputs']), '-o', str(output), '-m', str(workspace['checkpoint']), '--device', 'cpu'],
    )
    return status, output


def test_folder_of_every_format_with_one_truncated_file(workspace, upscaled):
    status, output = upscaled
    assert status == 1
    assert sorted(p.name for p in output.iterdir()) == [
        'cutout.png',
        'deep.png',
        'gray.jpg',
        'old.bmp',
        'photo.webp',
        'scan.tif',
    ]
    model = workspace['model']
    for name in ('photo.webp', 'scan.tif', 'old.bmp'):
        image, alpha, depth = read_image(workspace['inputs'] / name)
        result, _, _ = read_image(output / name)
        assert alpha is None and depth == 8 and result.shape == (40, 48, 3)
        error = np.abs(result - forward(model, image))
        if name.endswith('webp'):  # lossy
            assert error.mean() < 0.02
        else:  # 8-bit rounding only
            assert error.mean() < 0.5 / 255 and error.max() <= 0.5 / 255 + 1e-6


def test_sixteen_bit_stays_sixteen_bit(workspace, upscaled):
    raw = cv2.imread(str(upscaled[1] / 'deep.png'), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (40, 48, 3)
    assert np.count_nonzero(raw % 257) > raw.size // 2  # not 8-bit values stretched to 16 bits
    image, _, _ = read_image(workspace['inputs'] / 'deep.png')
    result, _, depth = read_image(upscaled[1] / 'deep.png')
    assert depth == 16 and np.abs(result - forward(workspace['model'], image)).max() <= 1 / 65535 + 1e-6


def test_a_folder_lists_the_image_suffixes_the_datasets_read(tmp_path):
    for name in ('a.ppm', 'b.PNG', 'c.webp', 'notes.txt'):
        (tmp_path / name).write_bytes(b'')
    assert [path.name for path in upscale.list_inputs(tmp_path)] == ['a.ppm', 'b.PNG', 'c.webp']


def test_sixteen_bit_ppm_is_written_at_sixteen_bits(tmp_path):
    samples = np.random.default_rng(0).integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    write_image(tmp_path / 'deep.ppm', samples / 65535.0, bit_depth=16)
    image, alpha, depth = read_image(tmp_path / 'deep.ppm')
    assert depth == 16 and alpha is None and np.array_equal(np.rint(image * 65535).astype(np.uint16), samples)


def test_alpha_is_upscaled_separately_and_reattached(workspace, upscaled):
    image, alpha, _ = read_image(workspace['inputs'] / 'cutout.png')
    result, result_alpha, _ = read_image(upscaled[1] / 'cutout.png')
    model = workspace['model']
    assert np.abs(result - forward(model, image)).max() <= 1 / 255 + 1e-6
    expected_alpha = forward(model, np.repeat(alpha[..., None], 3, axis=2)).mean(axis=2)
    assert result_alpha.shape == (40, 48)
    assert np.abs(result_alpha - expected_alpha).max() <= 1 / 255 + 1e-6


def test_gray_image_through_an_rgb_model_stays_gray(workspace, upscaled):
    image, _, _ = read_image(workspace['inputs'] / 'gray.jpg')
    raw = cv2.imread(str(upscaled[1] / 'gray.jpg'), cv2.IMREAD_UNCHANGED)
    assert raw.shape == (40, 48)
    expected = forward(workspace['model'], np.repeat(image, 3, axis=2)).mean(axis=2)
    assert np.abs(raw / 255.0 - expected).mean() < 0.02  # JPEG-compressed output


@pytest.mark.parametrize('bit_depth', [8, 16])
def test_gray_alpha_png_stays_gray_alpha_at_its_bit_depth(bit_depth, workspace, tmp_path):
    """OpenCV decodes gray+alpha PNG as BGRA and cannot encode it: the output was RGBA."""
    gray = cv2.cvtColor(bgr(data.coffee(), 100, 100), cv2.COLOR_BGR2GRAY).astype(np.uint16)
    alpha = np.tile(np.linspace(0, 255, 24), (20, 1)).astype(np.uint16)
    peak = 255 if bit_depth == 8 else 65535
    samples = np.dstack([gray, alpha]) * (peak // 255) + (3 if bit_depth == 16 else 0)
    inputs = tmp_path / 'in'
    inputs.mkdir()
    if bit_depth == 8:
        Image.fromarray(samples.astype(np.uint8), 'LA').save(inputs / 'ga.png')
    else:  # PIL has no 16-bit gray+alpha mode
        from hat_basicsr.utils.image_io import encode_gray_alpha_png

        (inputs / 'ga.png').write_bytes(encode_gray_alpha_png(samples))
    out = tmp_path / 'out'
    assert (
        run_command(upscale.add_parser, ['upscale', str(inputs), '-o', str(out), '-m', str(workspace['checkpoint'])])
        == 0
    )
    header = (out / 'ga.png').read_bytes()[:26]
    assert (header[24], header[25]) == (bit_depth, 4)  # PNG IHDR: bit depth, colour type gray+alpha
    result, result_alpha, depth = read_image(out / 'ga.png')
    assert depth == bit_depth and result.shape == (40, 48, 1) and result_alpha.shape == (40, 48)
    image, _, _ = read_image(inputs / 'ga.png')
    expected = forward(workspace['model'], np.repeat(image, 3, axis=2)).mean(axis=2, keepdims=True)
    assert np.abs(result - np.clip(expected, 0, 1)).max() <= 1 / peak + 1e-6


def test_truncated_file_is_named_in_one_line(upscaled, capfd):
    # The module-scoped run printed before this test captured; rerun on the broken file alone.
    output = upscaled[1]
    status = run_command(
        upscale.add_parser,
        [
            'upscale',
            str(upscaled[1].parent / 'inputs' / 'broken.png'),
            '-o',
            str(output),
            '-m',
            str(output.parent / 'tiny.pth'),
        ],
    )
    failures = [line for line in capfd.readouterr().err.splitlines() if 'failed:' in line]
    assert status == 1 and len(failures) == 1 and 'broken.png' in failures[0] and 'truncated' in failures[0]


def test_skip_existing_leaves_outputs_alone(workspace, tmp_path):
    source = workspace['inputs'] / 'old.bmp'
    arguments = ['upscale', str(source), '-o', str(tmp_path), '-m', str(workspace['checkpoint']), '--suffix', '_x2']
    assert run_command(upscale.add_parser, arguments) == 0
    target = tmp_path / 'old_x2.bmp'
    assert target.exists()
    target.write_bytes(b'sentinel')
    assert run_command(upscale.add_parser, arguments + ['--skip-existing']) == 0
    assert target.read_bytes() == b'sentinel'
    assert run_command(upscale.add_parser, arguments) == 0
    assert read_image(target)[0].shape == (40, 48, 3)


@pytest.mark.parametrize('mode', ['tile', 'bf16'])
def test_tiles_and_bf16_stay_close_to_the_plain_run(mode, workspace, upscaled, tmp_path):
    extra = ['--tile', '8', '--tile-overlap', '4'] if mode == 'tile' else ['--bf16']
    source = workspace['inputs'] / 'scan.tif'
    assert (
        run_command(
            upscale.add_parser,
            ['upscale', str(source), '-o', str(tmp_path), '-m', str(workspace['checkpoint']), *extra],
        )
        == 0
    )
    result, _, _ = read_image(tmp_path / 'scan.tif')
    plain, _, _ = read_image(upscaled[1] / 'scan.tif')
    assert np.abs(result - plain).mean() < 0.01
    assert np.abs(result - plain).max() < 0.1


def test_option_file_source_and_a_luminance_model_on_rgb(tmp_path, workspace):
    gray_model = make_checkpoint(tmp_path / 'gray.pth', in_chans=1)
    options = {
        'scale': 2,
        'network_g': {'type': 'HAT', 'in_chans': 1, **TINY},
        'path': {'pretrain_network_g': 'gray.pth', 'param_key_g': 'params_ema'},
    }
    option_file = tmp_path / 'gray.yml'
    option_file.write_text(yaml.safe_dump(options))
    source = workspace['inputs'] / 'old.bmp'
    assert (
        run_command(upscale.add_parser, ['upscale', str(source), '-o', str(tmp_path / 'out'), '-m', str(option_file)])
        == 0
    )
    image, _, _ = read_image(source)
    result, _, _ = read_image(tmp_path / 'out' / 'old.bmp')
    # Y as BasicSR's `color: y` datasets compute it (BT.601 studio range), which the model trained on.
    expected = forward(gray_model, rgb2ycbcr(image, y_only=True)[..., None])[..., 0]
    in_gamut = (expected > 24 / 255) & (expected < 227 / 255)  # elsewhere RGB clipping moves Y
    assert in_gamut.mean() > 0.5
    assert np.abs(rgb2ycbcr(result, y_only=True) - expected)[in_gamut].mean() < 0.005


def test_gray_image_through_a_luminance_model(tmp_path, workspace):
    gray_model = make_checkpoint(tmp_path / 'gray.pth', in_chans=1)
    source = workspace['inputs'] / 'gray.jpg'
    assert (
        run_command(
            upscale.add_parser, ['upscale', str(source), '-o', str(tmp_path / 'out'), '-m', str(tmp_path / 'gray.pth')]
        )
        == 0
    )
    image, _, _ = read_image(source)
    result, _, _ = read_image(tmp_path / 'out' / 'gray.jpg')
    low, span = 16 / 255, 219 / 255  # a gray level g has Y = 16/255 + g * 219/255
    expected = np.clip((forward(gray_model, low + image * span) - low) / span, 0, 1)
    assert result.shape == (40, 48, 1) and np.abs(result - expected).mean() < 0.02  # JPEG output


def test_option_file_without_weights_needs_allow_random_init(tmp_path, capsys):
    option_file = tmp_path / 'untrained.yml'
    option_file.write_text(yaml.safe_dump({'scale': 2, 'network_g': {'type': 'HAT', **TINY}}))
    with pytest.raises(SourceError, match='no path.pretrain_network_g'):
        load_model(option_file, 'cpu')
    model, scale = load_model(option_file, 'cpu', allow_random_init=True)
    assert scale == 2 and not model.training
    assert (
        run_command(upscale.add_parser, ['upscale', str(tmp_path), '-o', str(tmp_path / 'o'), '-m', str(option_file)])
        == 2
    )
    assert capsys.readouterr().err.count('\n') == 1


@pytest.mark.parametrize('alpha_kind', ['ramp', 'opaque'])
def test_bicubic_alpha_and_constant_alpha(alpha_kind, workspace, tmp_path):
    image = bgr(data.astronaut(), 100, 100)
    alpha = (
        np.full((20, 24), 255, np.uint8)
        if alpha_kind == 'opaque'
        else np.tile(np.linspace(0, 255, 20, dtype=np.float32)[:, None], (1, 24)).astype(np.uint8)
    )
    cv2.imwrite(str(tmp_path / 'in.png'), np.dstack([image, alpha]))
    assert (
        run_command(
            upscale.add_parser,
            [
                'upscale',
                str(tmp_path / 'in.png'),
                '-o',
                str(tmp_path / 'out'),
                '-m',
                str(workspace['checkpoint']),
                '--alpha',
                'bicubic',
            ],
        )
        == 0
    )
    _, result_alpha, _ = read_image(tmp_path / 'out' / 'in.png')
    expected = cv2.resize(alpha.astype(np.float32) / 255, (48, 40), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    assert np.abs(result_alpha - expected).max() <= 0.5 / 255 + 1e-6
    assert alpha_kind == 'ramp' or (result_alpha == 1).all()


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_is_applied_on_reading(orientation, tmp_path):
    pixels = bgr(data.chelsea(), 50, 50, size=(12, 20))[..., ::-1]
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / 'phone.png'
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, exif=exif)
    image, _, _ = read_image(path)
    with Image.open(path) as stored:
        upright = np.asarray(ImageOps.exif_transpose(stored), dtype=np.float32) / 255
    assert image.shape == upright.shape and np.array_equal(image, upright)


def test_option_file_tile_section_is_the_default_tiling(workspace, tmp_path, capsys):
    source = workspace['inputs'] / 'scan.tif'
    options = {
        'scale': 2,
        'network_g': {'type': 'HAT', **TINY},
        'tile': {'tile_size': 8, 'tile_pad': 4},
        'path': {'pretrain_network_g': str(workspace['checkpoint']), 'param_key_g': 'params_ema'},
    }
    (tmp_path / 'tiled.yml').write_text(yaml.safe_dump(options))
    runs = {
        'option-file': ['-m', str(tmp_path / 'tiled.yml')],
        'flags': ['-m', str(workspace['checkpoint']), '--tile', '8', '--tile-overlap', '4'],
        'whole': ['-m', str(workspace['checkpoint'])],
        'off-grid': ['-m', str(tmp_path / 'tiled.yml'), '--tile', '6'],
    }
    results = {}
    for name, arguments in runs.items():
        assert run_command(upscale.add_parser, ['upscale', str(source), '-o', str(tmp_path / name), *arguments]) == 0
        results[name] = read_image(tmp_path / name / 'scan.tif')[0]
        warned = 'not multiples of window_size 4' in capsys.readouterr().err
        assert warned == (name == 'off-grid')
    assert np.array_equal(results['option-file'], results['flags'])
    assert not np.array_equal(results['option-file'], results['whole'])


@pytest.mark.parametrize(
    'problem, message',
    [
        ('output-is-a-file', 'cannot create folder'),
        ('empty-folder', 'no images'),
        ('suffix', 'path separator'),
        ('scale-mismatch', 'scale 3 but network_g upscales by 2'),
        ('bad-network-value', 'bad.yml: network_g.embed_dim: got 25, expected a multiple of every num_heads entry'),
        ('bad-network-key', "bad.yml: network_g.window_sise is not an option of HAT (did you mean 'window_size'?)"),
        ('bad-tile', 'bad.yml: tile.tile_size: got 0, expected a positive integer'),
        ('negative-tile', '--tile and --tile-overlap must be >= 0'),
        ('max-pixels', '--max-pixels must be positive'),
        ('released-weights-missing', 'checkpoint not found: experiments/pretrained_models/HAT_SRx4.pth'),
        ('checkpoint-to-onnxruntime', 'is a PyTorch checkpoint or option file, not an ONNX model: drop --backend'),
        ('renamed-safetensors-to-onnxruntime', 'is a PyTorch checkpoint or option file, not an ONNX model: drop'),
    ],
)
def test_requests_that_cannot_start_exit_2_in_one_line(problem, message, workspace, tmp_path, capfd, monkeypatch):
    source, output, model = workspace['inputs'] / 'old.bmp', tmp_path / 'out', str(workspace['checkpoint'])
    extra = []
    if problem == 'output-is-a-file':
        output.write_bytes(b'a file')
    elif problem == 'empty-folder':
        source = tmp_path / 'empty'
        source.mkdir()
        (source / 'notes.txt').write_text('no images here')
    elif problem == 'suffix':
        extra = ['--suffix', '/../escaped']
    elif problem == 'scale-mismatch':
        (tmp_path / 'x3.yml').write_text(
            yaml.safe_dump({'scale': 3, 'network_g': {'type': 'HAT', **TINY}, 'path': {'pretrain_network_g': model}})
        )
        model = str(tmp_path / 'x3.yml')
    elif problem.startswith('bad-'):  # refused when the option file is read, naming the option
        edit = {
            'bad-network-value': {'network_g': {'type': 'HAT', **TINY, 'embed_dim': 25, 'num_heads': [3]}},
            'bad-network-key': {'network_g': {'type': 'HAT', **TINY, 'window_sise': 8}},
            'bad-tile': {'tile': {'tile_size': 0}},
        }[problem]
        options = {'scale': 2, 'network_g': {'type': 'HAT', **TINY}, 'path': {'pretrain_network_g': model}, **edit}
        (tmp_path / 'bad.yml').write_text(yaml.safe_dump(options))
        model = str(tmp_path / 'bad.yml')
    elif problem == 'max-pixels':
        extra = ['--max-pixels', '0']
    elif problem == 'released-weights-missing':  # the shipped file, run where its weights are not
        monkeypatch.chdir(tmp_path)
        model = str(REPO_ROOT / 'options' / 'test' / 'HAT_SRx4.yml')
        message += f' (path.pretrain_network_g of {model}); experiments/pretrained_models/README.md says where'
    elif problem == 'checkpoint-to-onnxruntime':
        extra = ['--backend', 'onnxruntime']
    elif problem == 'renamed-safetensors-to-onnxruntime':  # recognised by its header
        from safetensors.torch import save_file

        save_file({'weight': torch.zeros(2)}, tmp_path / 'model.bin')
        model, extra = str(tmp_path / 'model.bin'), ['--backend', 'onnxruntime']
    else:
        extra = ['--tile', '-8']
    status = run_command(upscale.add_parser, ['upscale', str(source), '-o', str(output), '-m', model, *extra])
    error = capfd.readouterr().err
    assert status == 2 and error.count('\n') == 1 and message in error and 'Traceback' not in error
    assert not (tmp_path / 'escaped.bmp').exists()


def test_an_output_that_cannot_be_written_fails_that_image_only(workspace, tmp_path, capfd):
    output = tmp_path / 'out'
    (output / 'old.bmp').mkdir(parents=True)  # a folder where old.bmp's output should go
    sources = tmp_path / 'in'
    sources.mkdir()
    for name in ('old.bmp', 'photo.webp'):
        (sources / name).write_bytes((workspace['inputs'] / name).read_bytes())
    status = run_command(
        upscale.add_parser, ['upscale', str(sources), '-o', str(output), '-m', str(workspace['checkpoint'])]
    )
    failures = [line for line in capfd.readouterr().err.splitlines() if 'failed:' in line]
    assert status == 1 and len(failures) == 1 and 'cannot write' in failures[0] and 'old.bmp' in failures[0]
    assert read_image(output / 'photo.webp')[0].shape == (40, 48, 3)
    assert sorted(p.name for p in output.iterdir()) == ['old.bmp', 'photo.webp']  # no temporary files left


def test_outputs_get_the_permissions_of_the_umask(workspace, tmp_path):
    previous = os.umask(0o022)
    try:
        assert (
            run_command(
                upscale.add_parser,
                [
                    'upscale',
                    str(workspace['inputs'] / 'old.bmp'),
                    '-o',
                    str(tmp_path),
                    '-m',
                    str(workspace['checkpoint']),
                ],
            )
            == 0
        )
    finally:
        os.umask(previous)
    assert (tmp_path / 'old.bmp').stat().st_mode & 0o777 == 0o644


def failure_lines(capfd):
    return [line for line in capfd.readouterr().err.splitlines() if 'failed:' in line]


def test_non_finite_weights_are_refused_before_any_image(workspace, tmp_path, capfd):
    checkpoint = torch.load(workspace['checkpoint'], weights_only=True)
    checkpoint['params_ema']['conv_last.weight'][0, 0, 0, 0] = float('nan')
    torch.save(checkpoint, tmp_path / 'diverged.pth')
    status = run_command(
        upscale.add_parser,
        ['upscale', str(workspace['inputs']), '-o', str(tmp_path / 'out'), '-m', str(tmp_path / 'diverged.pth')],
    )
    error = capfd.readouterr().err
    assert status == 2 and error.count('\n') == 1
    assert f'{tmp_path / "diverged.pth"}: tensor conv_last.weight holds NaN or infinite values' in error
    assert not any((tmp_path / 'out').iterdir())


def test_non_finite_output_fails_each_image_and_writes_nothing(workspace, tmp_path, capfd):
    checkpoint = torch.load(workspace['checkpoint'], weights_only=True)
    checkpoint['params_ema']['conv_last.weight'].fill_(3e38)  # finite weights whose outputs overflow
    torch.save(checkpoint, tmp_path / 'overflowing.pth')
    sources = [workspace['inputs'] / name for name in ('old.bmp', 'scan.tif')]
    for source in sources:
        (tmp_path / 'in').mkdir(exist_ok=True)
        (tmp_path / 'in' / source.name).write_bytes(source.read_bytes())
    status = run_command(
        upscale.add_parser,
        ['upscale', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '-m', str(tmp_path / 'overflowing.pth')],
    )
    failures = failure_lines(capfd)
    assert status == 1 and len(failures) == 2
    assert all('NaN or infinite values; nothing written' in line for line in failures)
    assert not any((tmp_path / 'out').iterdir())


def test_image_over_the_pixel_limit_fails_alone_before_decoding(workspace, tmp_path, capfd):
    folder = tmp_path / 'in'
    folder.mkdir()
    # A real 14000x14000 PNG: within OpenCV's decoding limit, above PIL's decompression-bomb limit.
    ok, encoded = cv2.imencode('.png', np.zeros((14000, 14000), np.uint8), [cv2.IMWRITE_PNG_BILEVEL, 1])
    (folder / 'huge.png').write_bytes(encoded.tobytes())
    (folder / 'old.bmp').write_bytes((workspace['inputs'] / 'old.bmp').read_bytes())
    arguments = ['upscale', str(folder), '-o', str(tmp_path / 'out'), '-m', str(workspace['checkpoint'])]
    assert run_command(upscale.add_parser, arguments) == 1
    assert failure_lines(capfd) == [
        f'hat-basicsr upscale: failed: {folder / "huge.png"}: 14000x14000 is 196,000,000 '
        'pixels, more than the limit of 100,000,000 (--max-pixels)'
    ]
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['old.bmp']

    (folder / 'huge.png').unlink()
    cv2.imwrite(str(folder / 'small.png'), bgr(data.coffee(), 0, 0, size=(16, 16)))
    assert run_command(upscale.add_parser, [*arguments, '--max-pixels', '400']) == 1  # old.bmp has 20x24 = 480
    assert failure_lines(capfd) == [
        f'hat-basicsr upscale: failed: {folder / "old.bmp"}: 24x20 is 480 pixels, '
        'more than the limit of 400 (--max-pixels)'
    ]
    assert read_image(tmp_path / 'out' / 'small.png')[0].shape == (32, 32, 3)


def test_next_run_removes_the_temporary_files_of_a_killed_run(workspace, tmp_path):
    output = tmp_path / 'out'
    output.mkdir()
    others = output / '.other.png.0123abcd.tmp'  # another run's output, perhaps being written now
    others.write_bytes(b'not ours')
    source = workspace['inputs'] / 'old.bmp'
    arguments = ['upscale', str(source), '-o', str(output), '-m', str(workspace['checkpoint'])]
    # Killed (SIGKILL) after writing its output's temporary file, before renaming it.
    killed = subprocess.run(
        [
            sys.executable,
            '-c',
            'import os, signal, sys\n'
            'os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n'
            'from hat_basicsr.cli import main\n'
            'main(sys.argv[1:])',
            *arguments,
        ],
        env=subprocess_env(),
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL
    left = [path for path in output.iterdir() if path.name.startswith('.old.bmp.')]
    assert len(left) == 1 and left[0].stat().st_size > 0
    assert run_command(upscale.add_parser, arguments) == 0
    assert sorted(p.name for p in output.iterdir()) == [others.name, 'old.bmp']


def test_read_only_output_folder_is_refused_before_the_model_is_read(workspace, tmp_path, capfd):
    # Root writes through permission bits, so the folder is a read-only mount, which refuses root too.
    with tmpfs(tmp_path / 'read-only', size=64 * 1024, read_only=True) as output:
        for model in (str(workspace['checkpoint']), str(tmp_path / 'no-such-model.pth')):
            status = run_command(
                upscale.add_parser, ['upscale', str(workspace['inputs'] / 'old.bmp'), '-o', str(output), '-m', model]
            )
            error = capfd.readouterr().err
            assert status == 2
            assert error == f'hat-basicsr upscale: error: cannot write into folder {output}: Read-only file system\n'

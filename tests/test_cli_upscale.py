"""`hat-basicsr upscale` on real photo crops in every supported format, depth and layout."""
import cv2
import numpy as np
import pytest
import torch
import yaml
from skimage import data

from hat_basicsr import HAT
from hat_basicsr.cli import upscale
from hat_basicsr.cli.common import SourceError, load_model, read_image, run_command

TINY = {'upscale': 2, 'embed_dim': 16, 'depths': [1], 'num_heads': [2], 'window_size': 4, 'compress_ratio': 2,
        'squeeze_factor': 4, 'mlp_ratio': 2, 'img_size': 16, 'upsampler': 'pixelshuffle'}


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
    return np.ascontiguousarray(photo[top:top + size[0], left:left + size[1], ::-1])


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
    (inputs / 'broken.png').write_bytes(whole[:len(whole) // 2])
    return {'root': root, 'model': model, 'inputs': inputs, 'checkpoint': root / 'tiny.pth'}


@pytest.fixture(scope='module')
def upscaled(workspace):
    output = workspace['root'] / 'out'
    status = run_command(upscale.add_parser, ['upscale', str(workspace['inputs']), '-o', str(output), '-m',
                                              str(workspace['checkpoint']), '--device', 'cpu'])
    return status, output


def test_folder_of_every_format_with_one_truncated_file(workspace, upscaled):
    status, output = upscaled
    assert status == 1
    assert sorted(p.name for p in output.iterdir()) == ['cutout.png', 'deep.png', 'gray.jpg', 'old.bmp',
                                                        'photo.webp', 'scan.tif']
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


def test_truncated_file_is_named_in_one_line(upscaled, capfd):
    # The module-scoped run printed before this test captured; rerun on the broken file alone.
    output = upscaled[1]
    status = run_command(upscale.add_parser, ['upscale', str(upscaled[1].parent / 'inputs' / 'broken.png'), '-o',
                                              str(output), '-m', str(output.parent / 'tiny.pth')])
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
    assert run_command(upscale.add_parser, ['upscale', str(source), '-o', str(tmp_path), '-m',
                                            str(workspace['checkpoint']), *extra]) == 0
    result, _, _ = read_image(tmp_path / 'scan.tif')
    plain, _, _ = read_image(upscaled[1] / 'scan.tif')
    assert np.abs(result - plain).mean() < 0.01
    assert np.abs(result - plain).max() < 0.1


def test_option_file_source_and_a_luminance_model_on_rgb(tmp_path, workspace):
    gray_model = make_checkpoint(tmp_path / 'gray.pth', in_chans=1)
    options = {'scale': 2, 'network_g': {'type': 'HAT', 'in_chans': 1, **TINY},
               'path': {'pretrain_network_g': 'gray.pth', 'param_key_g': 'params_ema'}}
    option_file = tmp_path / 'gray.yml'
    option_file.write_text(yaml.safe_dump(options))
    source = workspace['inputs'] / 'old.bmp'
    assert run_command(upscale.add_parser, ['upscale', str(source), '-o', str(tmp_path / 'out'), '-m',
                                            str(option_file)]) == 0
    image, _, _ = read_image(source)
    result, _, _ = read_image(tmp_path / 'out' / 'old.bmp')
    luma = cv2.cvtColor(result, cv2.COLOR_RGB2YCrCb)[..., 0]
    expected = forward(gray_model, cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)[..., :1])[..., 0]
    assert np.abs(luma - expected).mean() < 0.01


def test_option_file_without_weights_needs_allow_random_init(tmp_path, capsys):
    option_file = tmp_path / 'untrained.yml'
    option_file.write_text(yaml.safe_dump({'scale': 2, 'network_g': {'type': 'HAT', **TINY}}))
    with pytest.raises(SourceError, match='no path.pretrain_network_g'):
        load_model(option_file, 'cpu')
    model, scale = load_model(option_file, 'cpu', allow_random_init=True)
    assert scale == 2 and not model.training
    assert run_command(upscale.add_parser, ['upscale', str(tmp_path), '-o', str(tmp_path / 'o'), '-m',
                                            str(option_file)]) == 2
    assert capsys.readouterr().err.count('\n') == 1


@pytest.mark.parametrize('alpha_kind', ['ramp', 'opaque'])
def test_bicubic_alpha_and_constant_alpha(alpha_kind, workspace, tmp_path):
    image = bgr(data.astronaut(), 100, 100)
    alpha = np.full((20, 24), 255, np.uint8) if alpha_kind == 'opaque' else \
        np.tile(np.linspace(0, 255, 20, dtype=np.float32)[:, None], (1, 24)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / 'in.png'), np.dstack([image, alpha]))
    assert run_command(upscale.add_parser, ['upscale', str(tmp_path / 'in.png'), '-o', str(tmp_path / 'out'), '-m',
                                            str(workspace['checkpoint']), '--alpha', 'bicubic']) == 0
    _, result_alpha, _ = read_image(tmp_path / 'out' / 'in.png')
    expected = cv2.resize(alpha.astype(np.float32) / 255, (48, 40), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    assert np.abs(result_alpha - expected).max() <= 0.5 / 255 + 1e-6
    assert alpha_kind == 'ramp' or (result_alpha == 1).all()

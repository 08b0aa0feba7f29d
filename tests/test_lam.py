"""LAM / Diffusion Index and per-stage feature maps (hat_basicsr.analysis), and their CLI commands."""
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
from torch import Tensor, nn

import hat_basicsr  # noqa: F401  (makes `import basicsr` work)
from hat_basicsr import HAT
from hat_basicsr.analysis import (
    Box,
    blur_path,
    capture_stage_features,
    check_box,
    diffusion_index,
    gini,
    gradient_detector,
    integrated_gradients,
    local_attribution_map,
    render_feature_grid,
    render_lam_panel,
    save_lam_panel,
    stage_modules,
)
from hat_basicsr.analysis.visual import GAP, HEADER
from hat_basicsr.cli import main as cli_main  # the `hat-basicsr` console script
from hat_basicsr.cli.lam import model_input
from hat_basicsr.errors import BoxError

from basicsr.utils.color_util import rgb2ycbcr


def smooth_image(size: int, seed: int = 0) -> Tensor:
    """Random colours, lightly blurred: texture at every position, like a natural crop."""
    generator = torch.Generator().manual_seed(seed)
    return blur_path(torch.rand(3, size, size, generator=generator), torch.zeros(1), 1.0)[0]


def tiny_hat(depths=(1, ), window_size: int = 4, upscale: int = 2) -> HAT:
    torch.manual_seed(0)
    return HAT(img_size=16, embed_dim=16, depths=list(depths), num_heads=[2] * len(depths), window_size=window_size,
               mlp_ratio=2, squeeze_factor=4, upscale=upscale, upsampler='pixelshuffle')


class LocalNet(nn.Module):
    """Two 3x3 convolutions and a pixel shuffle: each output pixel sees a 5x5 input neighbourhood."""

    def __init__(self, scale: int = 2):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 3 * scale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def features(self, x: Tensor) -> Tensor:
        return self.conv1(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.conv2(torch.relu(self.features(x))))


class GlobalNet(LocalNet):
    """LocalNet plus one global self-attention over all positions: every pixel can use every other."""

    def features(self, x: Tensor) -> Tensor:
        f = self.conv1(x)
        tokens = f.flatten(2).transpose(1, 2)
        mixed = torch.softmax(tokens @ tokens.transpose(1, 2) / 4, dim=-1) @ tokens
        return f + mixed.transpose(1, 2).reshape(f.shape)


# ---------------------------------------------------------------- Gini / Diffusion Index


def test_gini_and_diffusion_index_hand_values():
    assert gini(np.ones(10)) == pytest.approx(0.0)
    assert diffusion_index(np.full((4, 4), 3.0)) == pytest.approx(100.0)
    for n in (2, 5, 64):
        one_hot = np.zeros(n)
        one_hot[n // 2] = 7.0
        assert gini(one_hot) == pytest.approx((n - 1) / n)
        assert diffusion_index(one_hot) == pytest.approx(100 / n)
    # sorted 1, 2, 3, 4: sum_i (2i - n - 1) a_i / (n sum a) = (-3 - 2 + 3 + 12) / 40
    assert gini([4.0, 1.0, 3.0, 2.0]) == pytest.approx(0.25)
    assert gini(torch.tensor([-4.0, 1.0, -3.0, 2.0])) == pytest.approx(0.25), 'signs are ignored'
    with pytest.raises(ValueError, match='non-zero'):
        gini(np.zeros(5))


# ---------------------------------------------------------------- blur path and detector


def test_blur_path_ends_and_batching():
    image = torch.rand(3, 12, 10)
    alphas = torch.tensor([0.0, 0.3, 1.0])
    path = blur_path(image, alphas, 2.0)
    assert path.shape == (3, 3, 12, 10)
    torch.testing.assert_close(path[2], image, atol=1e-6, rtol=0)
    for point, alpha in zip(path, alphas):
        torch.testing.assert_close(point, blur_path(image, alpha[None], 2.0)[0])
    variation = [float((p[..., 1:] - p[..., :-1]).abs().sum()) for p in path]
    assert variation[0] < variation[1] < variation[2], 'more blur, less texture'
    assert blur_path(image, alphas, 40.0).shape == path.shape, 'kernel limited to what reflect padding allows'


def test_gradient_detector_counts_differences_inside_the_box():
    sr = torch.zeros(2, 1, 8, 8)
    sr[1, 0, :, 4:] = 1.0  # a vertical edge between columns 3 and 4
    detector = gradient_detector(Box(2, 1, 4))
    torch.testing.assert_close(detector(sr), torch.tensor([0.0, 4.0]))  # 4 rows cross the edge
    assert gradient_detector(Box(4, 1, 4))(sr)[1] == 0, 'the edge lies outside this box'


# ---------------------------------------------------------------- integrated gradients


def test_completeness_on_tiny_hat():
    model, image = tiny_hat(), smooth_image(16)
    box = Box(12, 8, 8)
    result = integrated_gradients(model, image, gradient_detector(box), steps=100, batch=26, progress=False)
    baseline = blur_path(image, torch.zeros(1), 1.2)
    with torch.no_grad():
        expected_input = gradient_detector(box)(model(image[None])).item()
        expected_baseline = gradient_detector(box)(model(baseline)).item()
    assert result.detector_input == pytest.approx(expected_input, rel=1e-5)
    assert result.detector_baseline == pytest.approx(expected_baseline, rel=1e-5)
    change = expected_input - expected_baseline
    assert abs(change) > 0.1, 'the test needs a detector that changes along the path'
    assert float(result.values.sum()) == pytest.approx(change, rel=0.01)
    assert result.completeness_gap < 0.01
    assert all(p.requires_grad for p in model.parameters()), 'parameter flags restored'


def test_batch_size_does_not_change_attribution():
    model, image = LocalNet(), smooth_image(12)
    detector = gradient_detector(Box(6, 6, 8))
    one = integrated_gradients(model, image, detector, steps=10, batch=1, progress=False)
    many = integrated_gradients(model, image, detector, steps=10, batch=4, progress=False)
    torch.testing.assert_close(one.values, many.values, atol=1e-6, rtol=1e-5)


def test_local_network_attribution_stays_in_its_receptive_field():
    box = Box(20, 16, 8)  # SR pixels, scale 2 -> LR rows 8..11, columns 10..13
    result = local_attribution_map(LocalNet(), smooth_image(24), box, steps=20, progress=False)
    lam = result.map
    radius = 2  # two 3x3 convolutions
    inside = np.zeros_like(lam, dtype=bool)
    inside[8 - radius:12 + radius, 10 - radius:14 + radius] = True
    assert lam[~inside].max() == 0
    assert (lam[inside] > 0).mean() > 0.5


def test_diffusion_index_separates_local_from_global_networks():
    image, box = smooth_image(24), Box(20, 20, 8)
    local = local_attribution_map(LocalNet(), image, box, steps=30, batch=31, progress=False).diffusion_index
    mixed = local_attribution_map(GlobalNet(), image, box, steps=30, batch=31, progress=False).diffusion_index
    assert local < 15
    assert mixed > 25
    assert mixed > 3 * local


# ---------------------------------------------------------------- boxes


@pytest.mark.parametrize('box, message', [
    (Box(-1, 0, 8), r'leaves the SR output .* x must be in \[0, 40\] and y in \[0, 40\]'),
    (Box(0, 41, 8), r'y=41 .* leaves the SR output'),
    (Box(45, 0, 4), r'x must be in \[0, 44\]'),
    (Box(0, 0, 50), 'larger than the SR output'),
    (Box(0, 0, 1), 'at least 2'),
], ids=['left', 'below', 'right', 'too-large', 'too-small'])
def test_check_box_rejects_boxes_outside_the_output(box, message):
    with pytest.raises(BoxError, match=message):
        check_box(box, 48, 48)


def test_lam_rejects_box_outside_before_integrating():
    with pytest.raises(BoxError, match='x must be in'):
        local_attribution_map(LocalNet(), smooth_image(8), Box(10, 0, 8), progress=False)


def test_lam_rejects_a_box_with_nothing_to_attribute():
    flat = torch.full((3, 12, 12), 0.5)  # blurring changes nothing, so the detector never moves
    with pytest.raises(BoxError, match='nothing to attribute'):
        local_attribution_map(LocalNet(), flat, Box(8, 8, 8), steps=4, progress=False)


# ---------------------------------------------------------------- figures


def test_lam_panel_size_and_png(tmp_path):
    image = smooth_image(12)
    result = local_attribution_map(LocalNet(), image, Box(4, 6, 8), steps=4, progress=False)
    panel = render_lam_panel(result, zoom=3)
    assert panel.shape == (HEADER + 36, 36 * 3 + 2 * GAP, 3) and panel.dtype == np.uint8
    zoom = math.ceil(160 / 12)  # default: at least MIN_TILE display pixels
    path = save_lam_panel(result, tmp_path / 'sub' / 'lam.png')
    written = cv2.imread(str(path))
    assert written.shape == (HEADER + 12 * zoom, 3 * 12 * zoom + 2 * GAP, 3)
    overlay = written[HEADER:, 12 * zoom + GAP:2 * 12 * zoom + GAP]
    assert overlay.std() > 10, 'the heatmap is not flat'


def test_stage_features_of_hat_are_cropped_to_the_input():
    model = tiny_hat(depths=(1, 1))
    assert [name for name, _ in stage_modules(model)] == ['layers.0', 'layers.1']
    image = torch.rand(3, 18, 14)  # padded to 20 x 16 inside HAT
    stages = capture_stage_features(model, image)
    assert [(name, tuple(value.shape)) for name, value in stages] == [('layers.0', (16, 18, 14)),
                                                                        ('layers.1', (16, 18, 14))]
    assert not model._forward_hooks and not model.layers[0]._forward_hooks, 'hooks removed'
    grid = render_feature_grid(stages, channels=[0, -1], tile=28)
    tile_h, tile_w = 2 * 18, 2 * 14  # shorter side enlarged to >= 28
    assert grid.shape == (2 * (HEADER + tile_h) + GAP, 2 * tile_w + GAP, 3)
    with pytest.raises(IndexError, match='16 channels'):
        render_feature_grid(stages, channels=[16])


def test_stage_features_of_a_body_network():
    from basicsr.archs import build_network
    edsr = build_network(dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=3, upscale=2))
    stages = capture_stage_features(edsr, torch.rand(3, 10, 10))
    assert [name for name, _ in stages] == ['body.0', 'body.1', 'body.2']
    grid = render_feature_grid(stages, columns=2, tile=20)
    assert grid.shape == (2 * (HEADER + 20) + GAP, 2 * 20 + GAP, 3)


# ---------------------------------------------------------------- command line

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
    options = {'scale': 2, 'network_g': network,
               'path': {'pretrain_network_g': str(folder / 'edsr.pth'), 'param_key_g': 'params'}}
    (folder / 'edsr.yml').write_text(yaml.safe_dump(options))
    return folder / 'edsr.yml'


def panel_shape(side: int) -> tuple:
    """Shape of the LAM panel for a square input of `side` pixels, default zoom, scale <= 10."""
    tile = side * max(1, math.ceil(160 / side))
    return (HEADER + tile, 3 * tile + 2 * GAP, 3)


def test_cli_lam_on_an_option_file_of_a_basicsr_arch(photo, edsr_options, tmp_path, capsys):
    out = tmp_path / 'edsr_lam.png'
    status = cli_main(['lam', str(photo), '-m', str(edsr_options), '--box', '8', '12', '--size', '12',
                              '--steps', '6', '--device', 'cpu', '-o', str(out)])
    assert status == 0
    di = float(re.search(r'DI (\d+\.\d+)', capsys.readouterr().out).group(1))
    assert 0 < di < 100
    assert cv2.imread(str(out)).shape == panel_shape(16)


def test_cli_lam_on_a_hat_checkpoint(photo, tmp_path, capsys):
    out = tmp_path / 'hat_lam.png'
    status = cli_main(['lam', str(photo), '-m', str(FIXTURES / 'hat_tiny_x4_w8.pth'), '--box', '24', '24',
                              '--steps', '4', '--batch', '5', '-o', str(out)])
    assert status == 0
    assert 'x4' in capsys.readouterr().out
    assert cv2.imread(str(out)).shape == panel_shape(16)


@pytest.mark.parametrize('box, size, message', [
    (['30', '0'], '8', r'leaves the SR output \(32x32, W x H\): x must be in \[0, 24\]'),
    (['0', '-3'], '8', r'y must be in|y in \[0, 24\]'),
    (['0', '0'], '40', 'larger than the SR output'),
], ids=['right', 'above', 'too-large'])
def test_cli_lam_bad_box_exits_2_with_a_message(photo, edsr_options, tmp_path, capsys, box, size, message):
    out = tmp_path / 'never.png'
    status = cli_main(['lam', str(photo), '-m', str(edsr_options), '--box', *box, '--size', size, '-o',
                              str(out)])
    err = capsys.readouterr().err
    assert status == 2
    assert re.search(message, err) and 'Traceback' not in err
    assert not out.exists()


def test_cli_unreadable_image_exits_2(edsr_options, tmp_path, capsys):
    fake = tmp_path / 'not_an_image.png'
    fake.write_text('hello')
    for command in (['lam', '--box', '0', '0'], ['features']):
        status = cli_main([command[0], str(fake), '-m', str(edsr_options), *command[1:], '-o',
                                  str(tmp_path / 'x.png')])
        assert status == 2
        assert 'not_an_image.png' in capsys.readouterr().err


def test_cli_features(photo, edsr_options, tmp_path, capsys):
    out = tmp_path / 'features.png'
    assert cli_main(['features', str(photo), '-m', str(edsr_options), '--channels', '0', '3', '-o',
                            str(out)]) == 0
    assert 'body.0, body.1' in capsys.readouterr().out
    tile = 16 * math.ceil(128 / 16)
    assert cv2.imread(str(out)).shape == (2 * (HEADER + tile) + GAP, 2 * tile + GAP, 3)
    assert cli_main(['features', str(photo), '-m', str(edsr_options), '--channels', '8', '-o',
                            str(out)]) == 2
    assert 'this stage has 8 channels' in capsys.readouterr().err


@pytest.mark.parametrize('command', [['lam', '--box', '0', '0'], ['features']])
def test_cli_output_name_opencv_cannot_write_exits_2_before_computing(photo, edsr_options, tmp_path, capsys,
                                                                      monkeypatch, command):
    def never(*args, **kwargs):
        raise AssertionError('computed before checking the output name')

    monkeypatch.setattr('hat_basicsr.cli.common.build_network', never)
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

"""LAM / Diffusion Index (hat_basicsr.analysis.lam): attribution, its properties, the panel."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from torch import Tensor, nn

import hat_basicsr  # noqa: F401  (makes `import basicsr` work)
from hat_basicsr.analysis import lam
from hat_basicsr.analysis.visual import GAP, HEADER
from hat_basicsr.errors import BoxError

from helpers import small_hat


def smooth_image(size: int, seed: int = 0) -> Tensor:
    """Random colours, lightly blurred: texture at every position, like a natural crop."""
    generator = torch.Generator().manual_seed(seed)
    return lam.blur_path(torch.rand(3, size, size, generator=generator), torch.zeros(1), 1.0)[0]


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
    assert lam.gini(np.ones(10)) == pytest.approx(0.0)
    assert lam.diffusion_index(np.full((4, 4), 3.0)) == pytest.approx(100.0)
    for n in (2, 5, 64):
        one_hot = np.zeros(n)
        one_hot[n // 2] = 7.0
        assert lam.gini(one_hot) == pytest.approx((n - 1) / n)
        assert lam.diffusion_index(one_hot) == pytest.approx(100 / n)
    # sorted 1, 2, 3, 4: sum_i (2i - n - 1) a_i / (n sum a) = (-3 - 2 + 3 + 12) / 40
    assert lam.gini([4.0, 1.0, 3.0, 2.0]) == pytest.approx(0.25)
    assert lam.gini(torch.tensor([-4.0, 1.0, -3.0, 2.0])) == pytest.approx(0.25), 'signs are ignored'
    with pytest.raises(ValueError, match='non-zero'):
        lam.gini(np.zeros(5))


# ---------------------------------------------------------------- blur path and detector


def test_blur_path_ends_and_batching():
    image = torch.rand(3, 12, 10)
    alphas = torch.tensor([0.0, 0.3, 1.0])
    path = lam.blur_path(image, alphas, 2.0)
    assert path.shape == (3, 3, 12, 10)
    torch.testing.assert_close(path[2], image, atol=1e-6, rtol=0)
    for point, alpha in zip(path, alphas):
        torch.testing.assert_close(point, lam.blur_path(image, alpha[None], 2.0)[0])
    variation = [float((p[..., 1:] - p[..., :-1]).abs().sum()) for p in path]
    assert variation[0] < variation[1] < variation[2], 'more blur, less texture'
    assert lam.blur_path(image, alphas, 40.0).shape == path.shape, 'kernel limited to what reflect padding allows'


def test_gradient_detector_counts_differences_inside_the_box():
    sr = torch.zeros(2, 1, 8, 8)
    sr[1, 0, :, 4:] = 1.0  # a vertical edge between columns 3 and 4
    detector = lam.gradient_detector(lam.Box(2, 1, 4))
    torch.testing.assert_close(detector(sr), torch.tensor([0.0, 4.0]))  # 4 rows cross the edge
    assert lam.gradient_detector(lam.Box(4, 1, 4))(sr)[1] == 0, 'the edge lies outside this box'


# ---------------------------------------------------------------- integrated gradients


def test_completeness_on_small_hat():
    model, image = small_hat(), smooth_image(16)
    box = lam.Box(12, 8, 8)
    result = lam.integrated_gradients(model, image, lam.gradient_detector(box), steps=100, batch=26, progress=False)
    baseline = lam.blur_path(image, torch.zeros(1), 1.2)
    with torch.no_grad():
        expected_input = lam.gradient_detector(box)(model(image[None])).item()
        expected_baseline = lam.gradient_detector(box)(model(baseline)).item()
    assert result.detector_input == pytest.approx(expected_input, rel=1e-5)
    assert result.detector_baseline == pytest.approx(expected_baseline, rel=1e-5)
    change = expected_input - expected_baseline
    assert abs(change) > 0.1, 'the test needs a detector that changes along the path'
    assert float(result.values.sum()) == pytest.approx(change, rel=0.01)
    assert result.completeness_gap < 0.01
    assert all(p.requires_grad for p in model.parameters()), 'parameter flags restored'


def test_batch_size_does_not_change_attribution():
    model, image = LocalNet(), smooth_image(12)
    detector = lam.gradient_detector(lam.Box(6, 6, 8))
    one = lam.integrated_gradients(model, image, detector, steps=10, batch=1, progress=False)
    many = lam.integrated_gradients(model, image, detector, steps=10, batch=4, progress=False)
    torch.testing.assert_close(one.values, many.values, atol=1e-6, rtol=1e-5)


def test_local_network_attribution_stays_in_its_receptive_field():
    box = lam.Box(20, 16, 8)  # SR pixels, scale 2 -> LR rows 8..11, columns 10..13
    result = lam.local_attribution_map(LocalNet(), smooth_image(24), box, steps=20, progress=False)
    lam_map = result.map
    radius = 2  # two 3x3 convolutions
    inside = np.zeros_like(lam_map, dtype=bool)
    inside[8 - radius : 12 + radius, 10 - radius : 14 + radius] = True
    assert lam_map[~inside].max() == 0
    assert (lam_map[inside] > 0).mean() > 0.5


def test_diffusion_index_separates_local_from_global_networks():
    image, box = smooth_image(24), lam.Box(20, 20, 8)
    local = lam.local_attribution_map(LocalNet(), image, box, steps=30, batch=31, progress=False).diffusion_index
    mixed = lam.local_attribution_map(GlobalNet(), image, box, steps=30, batch=31, progress=False).diffusion_index
    assert local < 15
    assert mixed > 25
    assert mixed > 3 * local


# ---------------------------------------------------------------- boxes


@pytest.mark.parametrize(
    'box, message',
    [
        (lam.Box(-1, 0, 8), r'leaves the SR output .* x must be in \[0, 40\] and y in \[0, 40\]'),
        (lam.Box(0, 41, 8), r'y=41 .* leaves the SR output'),
        (lam.Box(45, 0, 4), r'x must be in \[0, 44\]'),
        (lam.Box(0, 0, 50), 'larger than the SR output'),
        (lam.Box(0, 0, 1), 'at least 2'),
    ],
    ids=['left', 'below', 'right', 'too-large', 'too-small'],
)
def test_check_box_rejects_boxes_outside_the_output(box, message):
    with pytest.raises(BoxError, match=message):
        lam.check_box(box, 48, 48)


def test_lam_rejects_box_outside_before_integrating():
    with pytest.raises(BoxError, match='x must be in'):
        lam.local_attribution_map(LocalNet(), smooth_image(8), lam.Box(10, 0, 8), progress=False)


def test_lam_rejects_a_box_with_nothing_to_attribute():
    flat = torch.full((3, 12, 12), 0.5)  # blurring changes nothing, so the detector never moves
    with pytest.raises(BoxError, match='nothing to attribute'):
        lam.local_attribution_map(LocalNet(), flat, lam.Box(8, 8, 8), steps=4, progress=False)


# ---------------------------------------------------------------- figures


def test_lam_panel_size_and_png(tmp_path):
    image = smooth_image(12)
    result = lam.local_attribution_map(LocalNet(), image, lam.Box(4, 6, 8), steps=4, progress=False)
    panel = lam.render_lam_panel(result, zoom=3)
    assert panel.shape == (HEADER + 36, 36 * 3 + 2 * GAP, 3) and panel.dtype == np.uint8
    zoom = math.ceil(160 / 12)  # default: at least MIN_TILE display pixels
    path = lam.save_lam_panel(result, tmp_path / 'sub' / 'lam.png')
    written = cv2.imread(str(path))
    assert written.shape == (HEADER + 12 * zoom, 3 * 12 * zoom + 2 * GAP, 3)
    overlay = written[HEADER:, 12 * zoom + GAP : 2 * 12 * zoom + GAP]
    assert overlay.std() > 10, 'the heatmap is not flat'

"""Per-stage feature maps (hat_basicsr.analysis.features)."""

from __future__ import annotations

import pytest
import torch

import hat_basicsr  # noqa: F401  (makes `import basicsr` work)
from hat_basicsr.analysis import (
    capture_stage_features,
    render_feature_grid,
    stage_modules,
)
from hat_basicsr.analysis.visual import GAP, HEADER

from helpers import small_hat


def test_stage_features_of_hat_are_cropped_to_the_input():
    model = small_hat(depths=(1, 1))
    assert [name for name, _ in stage_modules(model)] == ['layers.0', 'layers.1']
    image = torch.rand(3, 18, 14)  # padded to 20 x 16 inside HAT
    stages = capture_stage_features(model, image)
    assert [(name, tuple(value.shape)) for name, value in stages] == [
        ('layers.0', (16, 18, 14)),
        ('layers.1', (16, 18, 14)),
    ]
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

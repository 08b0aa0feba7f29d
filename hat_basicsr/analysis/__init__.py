"""Attribution and feature-map analysis of SR networks: LAM / Diffusion Index and per-stage features."""

from hat_basicsr.analysis.features import capture_stage_features, render_feature_grid, save_feature_grid, stage_modules
from hat_basicsr.analysis.lam import (
    Attribution,
    Box,
    LamResult,
    blur_path,
    check_box,
    diffusion_index,
    gini,
    gradient_detector,
    integrated_gradients,
    local_attribution_map,
    render_lam_panel,
    save_lam_panel,
)
from hat_basicsr.errors import BoxError

__all__ = [
    'Attribution',
    'Box',
    'BoxError',
    'LamResult',
    'blur_path',
    'capture_stage_features',
    'check_box',
    'diffusion_index',
    'gini',
    'gradient_detector',
    'integrated_gradients',
    'local_attribution_map',
    'render_feature_grid',
    'render_lam_panel',
    'save_feature_grid',
    'save_lam_panel',
    'stage_modules',
]

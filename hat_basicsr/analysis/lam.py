"""Local Attribution Maps (LAM; Gu & Dong, CVPR 2021) and the Diffusion Index.

LAM asks which input pixels a super-resolution network uses to rebuild one small patch of its
output. The patch is scored by a detector (its total gradient magnitude, i.e. how much texture
the network put there), and the score is attributed to input pixels by integrated gradients along
a progressive-blurring path from a heavily blurred baseline to the input. The Diffusion Index
(1 - Gini of the attribution) * 100 summarises how widely the attribution is spread.

Coordinate convention, used throughout this package and its CLI: the box is given in OUTPUT (SR)
pixels, as in the LAM paper, and drawn on the input at box / scale.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from hat_basicsr.analysis.visual import colorize, labelled, resize, stack, to_uint8, write_png
from hat_basicsr.errors import BoxError
from hat_basicsr.utils.defaults import DEFAULT_BOX_SIZE, DEFAULT_SIGMA, DEFAULT_STEPS

Detector = Callable[[Tensor], Tensor]
DeviceLike = Union[str, torch.device]

MIN_TILE = 160  # shortest side of the panel's tiles, in display pixels, unless zoom is given


class Box(NamedTuple):
    """A square target patch: top-left corner (x, y) and side, in SR-output pixels."""

    x: int
    y: int
    size: int = DEFAULT_BOX_SIZE


def check_box(box: Box, sr_height: int, sr_width: int) -> None:
    """Fail early, with the valid range, when the box does not lie inside the SR output."""
    if box.size < 2:
        raise BoxError(f'box size must be at least 2 SR pixels (the detector takes differences), got {box.size}')
    if box.size > min(sr_height, sr_width):
        raise BoxError(f'box size {box.size} is larger than the SR output ({sr_width}x{sr_height} pixels, W x H)')
    max_x, max_y = sr_width - box.size, sr_height - box.size
    if not (0 <= box.x <= max_x and 0 <= box.y <= max_y):
        raise BoxError(
            f'box at x={box.x}, y={box.y} of size {box.size} leaves the SR output '
            f'({sr_width}x{sr_height}, W x H): x must be in [0, {max_x}] and y in [0, {max_y}] '
            f'(SR-pixel coordinates of the top-left corner)'
        )


def gradient_detector(box: Box) -> Detector:
    """Detector of the LAM paper: summed |horizontal| + |vertical| differences inside the box.

    Maps a batch of SR outputs (B, C, H, W) to one score per sample (B,).
    """

    def detect(sr: Tensor) -> Tensor:
        patch = sr[..., box.y : box.y + box.size, box.x : box.x + box.size]
        dx = (patch[..., :, 1:] - patch[..., :, :-1]).abs().flatten(1).sum(1)
        dy = (patch[..., 1:, :] - patch[..., :-1, :]).abs().flatten(1).sum(1)
        return dx + dy

    return detect


def gaussian_kernels(sigmas: Tensor, radius: int) -> Tensor:
    """Normalised 1-D Gaussian kernels (B, 2*radius+1), one per sigma; sigma 0 gives the identity."""
    taps = torch.arange(-radius, radius + 1, dtype=sigmas.dtype, device=sigmas.device)
    kernels = torch.exp(-0.5 * (taps / sigmas[:, None].clamp_min(1e-6)) ** 2)
    return kernels / kernels.sum(1, keepdim=True)


def blur_path(image: Tensor, alphas: Tensor, sigma_max: float) -> Tensor:
    """Points of the progressive-blurring path: gamma(alpha) = image * Gaussian((1 - alpha) * sigma_max).

    `image` is (C, H, W); returns (len(alphas), C, H, W). alpha 0 is the baseline, alpha 1 the image.
    All points share one kernel support (3 sigma_max, limited by the image for reflect padding) so
    that a whole batch of path points is a single grouped convolution.
    """
    channels, height, width = image.shape
    radius = max(0, min(math.ceil(3 * sigma_max), height - 1, width - 1))
    sigmas = (1 - alphas.to(image)) * sigma_max
    kernels = gaussian_kernels(sigmas, radius).repeat_interleave(channels, 0)  # (B*C, K)
    groups = kernels.shape[0]
    x = image.expand(len(alphas), -1, -1, -1).reshape(1, groups, height, width)
    x = F.pad(x, (radius, radius, radius, radius), mode='reflect') if radius else x
    x = F.conv2d(x, kernels[:, None, None, :], groups=groups)
    x = F.conv2d(x, kernels[:, None, :, None], groups=groups)
    return x.view(len(alphas), channels, height, width)


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients for the duration; the caller's settings come back after."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield model
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
        model.train(was_training)


@dataclass
class Attribution:
    """Integrated-gradients result: per-input-pixel attribution and the detector at both path ends."""

    values: Tensor  # (C, H, W), same layout as the input
    detector_input: float
    detector_baseline: float

    @property
    def completeness_gap(self) -> float:
        """Relative mismatch between sum(attribution) and D(input) - D(baseline); 0 for an exact integral."""
        change = self.detector_input - self.detector_baseline
        return abs(float(self.values.sum()) - change) / max(abs(change), 1e-12)


def integrated_gradients(
    model: nn.Module,
    image: Tensor,
    detector: Detector,
    *,
    sigma: float = DEFAULT_SIGMA,
    steps: int = DEFAULT_STEPS,
    batch: int = 8,
    progress: bool = True,
) -> Attribution:
    """Path-integrated gradients of `detector(model(x))` along the blur path, trapezoidal rule.

    The trapezoidal sum over `steps` intervals, sum_k (g_k + g_{k-1}) / 2 * (gamma_k - gamma_{k-1}),
    is regrouped as sum_k g_k * (gamma_{k+1} - gamma_{k-1}) / 2 (ends clamped), so each path point's
    gradient is used once and discarded: memory is bounded by `batch` path points, not `steps`.
    Its error falls as 1/steps^2, so the attributions sum to D(input) - D(baseline) (completeness).
    The model runs on the device of `image`, which must match the model's.
    """
    if steps < 1 or batch < 1 or not sigma > 0:
        raise ValueError(f'steps, batch and sigma must be positive, got steps={steps}, batch={batch}, sigma={sigma}')
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3:
        raise ValueError(f'expected one image (C, H, W), got shape {tuple(image.shape)}')
    image = image.detach()
    alphas = torch.linspace(0, 1, steps + 1, dtype=torch.float64, device=image.device)
    total = torch.zeros_like(image, dtype=torch.float64)
    scores = torch.empty(steps + 1, dtype=torch.float64)
    with frozen(model), tqdm(total=steps + 1, desc='LAM path', unit='step', disable=not progress) as bar:
        for start in range(0, steps + 1, batch):
            index = torch.arange(start, min(start + batch, steps + 1), device=image.device)
            points = blur_path(image, alphas[index], sigma).requires_grad_(True)
            with torch.enable_grad():
                score = detector(model(points))
                (grads,) = torch.autograd.grad(score.sum(), points)
            ahead = blur_path(image, alphas[(index + 1).clamp(max=steps)], sigma)
            behind = blur_path(image, alphas[(index - 1).clamp(min=0)], sigma)
            total += (grads.double() * (ahead - behind).double() / 2).sum(0)
            scores[index.cpu()] = score.detach().double().cpu()
            bar.update(len(index))
    return Attribution(total.float().cpu(), float(scores[-1]), float(scores[0]))


def attribution_map(values: Tensor) -> np.ndarray:
    """Absolute attribution summed over channels: one non-negative value per input pixel (H, W)."""
    return values.abs().sum(0).cpu().numpy().astype(np.float64)


def gini(values: Union[np.ndarray, Tensor, Sequence[float]]) -> float:
    """Gini coefficient of the absolute values: 0 when all are equal, (n-1)/n when one holds everything."""
    a = np.sort(np.abs(np.asarray(values, dtype=np.float64)).ravel())
    if a.size == 0 or a.sum() == 0:
        raise ValueError('the Gini coefficient needs at least one non-zero value')
    n = a.size
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * a).sum() / (n * a.sum()))


def diffusion_index(values: Union[np.ndarray, Tensor, Sequence[float]]) -> float:
    """(1 - Gini) * 100: larger means the network draws on more input pixels."""
    return (1 - gini(values)) * 100


@dataclass
class LamResult:
    """Everything the LAM figure needs, all on the CPU."""

    image: Tensor  # (C, H, W) input in [0, 1]
    sr: Tensor  # (C, H*scale, W*scale)
    box: Box  # SR-pixel coordinates
    scale: int
    attribution: Attribution

    @property
    def map(self) -> np.ndarray:
        return attribution_map(self.attribution.values)

    @property
    def diffusion_index(self) -> float:
        return diffusion_index(self.map)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a parameterless model)."""
    return next(model.parameters(), torch.empty(0)).device


def local_attribution_map(
    model: nn.Module,
    image: Tensor,
    box: Box,
    *,
    sigma: float = DEFAULT_SIGMA,
    steps: int = DEFAULT_STEPS,
    batch: int = 8,
    device: Optional[DeviceLike] = None,
    progress: bool = True,
) -> LamResult:
    """LAM of an SR model for the `box` (SR pixels) of its output on `image` ((C, H, W), in [0, 1]).

    `device` moves the model there (default: where the model already is). Raises BoxError when
    the box does not fit the output or gets no attribution at all.
    """
    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)
    image = image.detach().to(device, torch.float32)
    with frozen(model), torch.no_grad():
        sr = model(image[None])[0]
    scale = sr.shape[-1] // image.shape[-1]
    check_box(box, *sr.shape[-2:])
    attribution = integrated_gradients(
        model, image, gradient_detector(box), sigma=sigma, steps=steps, batch=batch, progress=progress
    )
    if not attribution.values.abs().sum() > 0:
        raise BoxError(
            f'nothing to attribute for the box at x={box.x}, y={box.y}: the detector does not change '
            'along the blur path (a flat patch?); choose a box with texture'
        )
    return LamResult(image.cpu(), sr.cpu(), box, scale, attribution)


def lr_box(box: Box, scale: int) -> Tuple[float, float, float]:
    """The box in input (LR) pixels: x, y, size divided by the scale."""
    return box.x / scale, box.y / scale, box.size / scale


def lam_heatmap(result: LamResult) -> np.ndarray:
    """The LAM map over a grey copy of the input, RGB uint8 at input size.

    The map is normalised by its maximum; each pixel's heat colour is blended in with opacity
    sqrt(normalised value), so unused pixels show the image and weak attributions stay visible.
    """
    lam = result.map
    norm = lam / lam.max()
    heat = colorize(norm, low=0.0, high=1.0).astype(np.float64)
    grey = cv2.cvtColor(to_uint8(result.image), cv2.COLOR_RGB2GRAY)[..., None].astype(np.float64)
    opacity = np.sqrt(norm)[..., None]
    return (heat * opacity + grey * (1 - opacity)).round().astype(np.uint8)


def render_lam_panel(result: LamResult, zoom: Optional[int] = None) -> np.ndarray:
    """Three labelled tiles, RGB uint8: input with the box (at box / scale), LAM overlay, SR patch.

    The LR tiles are enlarged `zoom` times (default: the scale, so they show at SR size, or more so
    that the shorter side reaches MIN_TILE pixels); the SR patch is enlarged to the same height.
    Panel size: (HEADER + H*zoom) x (2*W*zoom + H*zoom + 2*GAP).
    """
    zoom = zoom or max(result.scale, math.ceil(MIN_TILE / min(result.image.shape[-2:])))
    box = result.box
    height, width = (zoom * side for side in result.image.shape[-2:])
    x, y, size = (zoom * v for v in lr_box(box, result.scale))
    corners = (round(x), round(y)), (round(x + size) - 1, round(y + size) - 1)
    image = resize(to_uint8(result.image), (height, width))
    cv2.rectangle(image, *corners, (255, 0, 0), 1)
    overlay = resize(lam_heatmap(result), (height, width))
    cv2.rectangle(overlay, *corners, (255, 255, 255), 1)
    patch = resize(to_uint8(result.sr[:, box.y : box.y + box.size, box.x : box.x + box.size]), (height, height))
    return stack(
        [
            labelled(image, f'input, box {box.x},{box.y}'),
            labelled(overlay, f'LAM  DI {result.diffusion_index:.2f}'),
            labelled(patch, f'SR patch x{result.scale}'),
        ],
        axis=1,
    )


def save_lam_panel(result: LamResult, path: Union[str, Path], zoom: Optional[int] = None) -> Path:
    """Render the LAM panel and write it as a PNG."""
    return write_png(path, render_lam_panel(result, zoom))

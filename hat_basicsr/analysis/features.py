"""Feature maps after every stage of an SR network, as a labelled PNG grid.

Window-attention networks (SwinIR, HAT) compute attention inside fixed windows; where the windows
fail to exchange information, the intermediate features show a grid of blocks. Looking at the
output of every stage (HAT's RHAGs, SwinIR's RSTBs, EDSR's or RCAN's body blocks) shows where such
blocking appears and whether later stages remove it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from hat_basicsr.analysis.lam import DeviceLike, frozen, model_device
from hat_basicsr.analysis.visual import colorize, labelled, resize, stack, write_png

STAGE_CONTAINERS = ('layers', 'body')
Stage = Tuple[str, Tensor]  # (module name, feature map (C, H, W))


def stage_modules(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The stages to look at: children of `layers` (HAT, SwinIR) or `body` (EDSR, RCAN), else the
    model's top-level children."""
    for name in STAGE_CONTAINERS:
        container = getattr(model, name, None)
        if isinstance(container, (nn.ModuleList, nn.Sequential)) and len(container):
            return [(f'{name}.{child}', module) for child, module in container.named_children()]
    return list(model.named_children())


def _spatial(output: object, inputs: tuple) -> Optional[Tensor]:
    """A stage output as (B, C, H, W), or None when it is not a feature map. Token outputs (B, H*W, C)
    of transformer stages are folded back using the (H, W) argument such stages receive (HAT's and
    SwinIR's `x_size`)."""
    if not isinstance(output, Tensor):
        return None
    if output.ndim == 4:
        return output
    if output.ndim == 3:
        tokens = output.shape[1]
        for arg in inputs:
            if (
                isinstance(arg, (tuple, list))
                and len(arg) == 2
                and all(isinstance(v, int) for v in arg)
                and arg[0] * arg[1] == tokens
            ):
                return output.transpose(1, 2).reshape(output.shape[0], output.shape[2], *arg)
    return None


def capture_stage_features(model: nn.Module, image: Tensor, device: Optional[DeviceLike] = None) -> List[Stage]:
    """Run the model once on `image` ((C, H, W) in [0, 1]) and keep every stage's output, on the CPU.

    Stages whose output is not a feature map (a tuple, a vector) are left out.

    Maps are cropped to the output size when at least that large (stages after the upsampler),
    else to the input size: this removes the padding to a multiple of the window that HAT adds.
    """
    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)
    captured: List[Stage] = []

    def keep(name: str, inputs: tuple, output: object) -> None:
        value = _spatial(output, inputs)
        if value is not None:
            captured.append((name, value[0].cpu()))

    hooks = [
        module.register_forward_hook(lambda module, inputs, output, name=name: keep(name, inputs, output))
        for name, module in stage_modules(model)
    ]
    try:
        with frozen(model), torch.no_grad():
            output = model(image[None].to(device, torch.float32))
    finally:
        for hook in hooks:
            hook.remove()
    if not captured:
        raise ValueError(f'no stage of {type(model).__name__} produced a feature map')
    sizes = (tuple(output.shape[-2:]), tuple(image.shape[-2:]))
    return [(name, _crop(value, sizes)) for name, value in captured]


def _crop(value: Tensor, sizes: Sequence[Tuple[int, int]]) -> Tensor:
    """Crop to the first of `sizes` (height, width) the map covers; smaller maps stay as they are."""
    for height, width in sizes:
        if value.shape[-2] >= height and value.shape[-1] >= width:
            return value[:, :height, :width]
    return value


def feature_views(value: Tensor, channels: Optional[Sequence[int]] = None) -> List[Tuple[str, np.ndarray]]:
    """What to draw for one stage: the chosen channels, or (default) the mean |feature| per position."""
    if channels is None:
        return [('mean |x|', value.abs().mean(0).numpy())]
    bad = [c for c in channels if not -value.shape[0] <= c < value.shape[0]]
    if bad:
        raise IndexError(f'channels {bad} do not exist: this stage has {value.shape[0]} channels')
    return [(f'ch {c}', value[c].numpy()) for c in channels]


def render_feature_grid(
    stages: Sequence[Stage], channels: Optional[Sequence[int]] = None, columns: int = 6, tile: int = 128
) -> np.ndarray:
    """One labelled column of tiles per stage (one tile per view), `columns` stages per row.

    Every tile is normalised on its own (min..max) so structure stays visible at any depth, and
    resized so its shorter side is at least `tile` pixels (nearest: blocks stay sharp).
    """
    if not stages:
        raise ValueError('no stages to draw')
    height, width = stages[0][1].shape[-2:]
    enlarge = max(1, math.ceil(tile / min(height, width)))
    size = (height * enlarge, width * enlarge)
    strips = [
        stack(
            [
                labelled(resize(colorize(view, colormap=cv2.COLORMAP_VIRIDIS), size), f'{name} {label}')
                for label, view in feature_views(value, channels)
            ],
            axis=0,
        )
        for name, value in stages
    ]
    blank = np.full_like(strips[0], 255)
    rows = [strips[i : i + columns] for i in range(0, len(strips), columns)]
    if len(rows) > 1:
        rows[-1] = rows[-1] + [blank] * (columns - len(rows[-1]))
    return stack([stack(row, axis=1) for row in rows], axis=0)


def save_feature_grid(
    stages: Sequence[Stage], path: Union[str, Path], channels: Optional[Sequence[int]] = None, columns: int = 6
) -> Path:
    """Render the stage grid and write it as a PNG."""
    return write_png(path, render_feature_grid(stages, channels, columns))

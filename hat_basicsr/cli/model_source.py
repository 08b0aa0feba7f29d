"""Turning a model source into a model, for every subcommand.

A model source is either a checkpoint (.pth/.pt/.ckpt/.safetensors: a HAT whose options are read
from its weights) or a BasicSR option file (.yml/.yaml: any registered architecture, built by
`basicsr.archs.build_network` from `network_g`, weights from `path.pretrain_network_g`).
"""

from __future__ import annotations

import os
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

import hat_basicsr  # noqa: F401  (registers HAT before build_network looks it up)
from hat_basicsr.archs.hat_config import METADATA_KEY, checkpoint_options
from hat_basicsr.errors import CheckpointError, OptionFileError, SourceError
from hat_basicsr.option_check import network_problem, registered_class
from hat_basicsr.utils.onnx_deploy import OnnxModel
from hat_basicsr.utils.option_yaml import read_option_yaml
from hat_basicsr.utils.tiling import TileOptions
from hat_basicsr.utils.weights import extract_state_dict, load_weights, read_checkpoint

OPTION_SUFFIXES = ('.yml', '.yaml')
PRETRAINED_README = 'experiments/pretrained_models/README.md'


@dataclass
class ModelSpec:
    """Everything needed to build a model, before any tensor is allocated."""

    network: Dict  # network_g-style options, including 'type'
    scale: int
    weights: Union[None, Path, Dict[str, Tensor]]  # a path (option file) or loaded weights (checkpoint)
    param_key: Optional[str] = 'auto'
    strict: bool = True
    tile: Optional[TileOptions] = None  # an option file's `tile: {tile_size, tile_pad}`


def resolve_device(name: str, local_rank: Optional[int] = None) -> torch.device:
    """'auto' picks CUDA when available; an explicit device that does not exist is refused. With
    `local_rank` (one process per GPU under torchrun), 'auto' and 'cuda' mean that GPU."""
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda' and local_rank is not None:
        if torch.cuda.is_available() and local_rank >= torch.cuda.device_count():
            raise SourceError(
                f'LOCAL_RANK {local_rank} but {torch.cuda.device_count()} GPU(s) visible: '
                'start at most that many processes per node'
            )
        name = f'cuda:{local_rank}'
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise SourceError(f'unknown device {name!r} ({error})') from error
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SourceError(f'device {name!r} requested but CUDA is not available')
    return device


def read_option_file(path: Path) -> Dict:
    try:
        options = read_option_yaml(str(path))
    except OptionFileError as error:
        raise SourceError(str(error)) from error
    if not isinstance(options, dict) or not isinstance(options.get('network_g'), dict):
        raise SourceError(f'option file {path} has no network_g section')
    if 'type' not in options['network_g']:
        raise SourceError(f'option file {path}: network_g has no type')
    return options


def _option_file_spec(path: Path, param_key: Optional[str]) -> ModelSpec:
    options = read_option_file(path)
    network = options['network_g']
    network_scale = network.get('upscale', network.get('scale'))
    scale = options.get('scale', network_scale)
    if not isinstance(scale, int):
        raise SourceError(f'option file {path}: no integer scale (top-level scale or network_g upscale)')
    if network_scale is not None and network_scale != scale:
        raise SourceError(f'option file {path}: scale {scale} but network_g upscales by {network_scale}')
    try:
        tile = TileOptions.from_dict(options.get('tile'))
    except OptionFileError as error:
        raise SourceError(f'option file {path}: {error}') from error
    check_network(network, 'network_g', f'option file {path}')
    path_options = options.get('path') or {}
    weights = path_options.get('pretrain_network_g')
    if weights:
        weights = Path(os.path.expanduser(str(weights)))
        # BasicSR resolves relative paths against the working directory; the option file's own
        # folder is tried next so a model folder can be moved as a whole.
        if not weights.is_absolute() and not weights.exists() and (path.parent / weights).exists():
            weights = path.parent / weights
    return ModelSpec(
        network=network,
        scale=scale,
        weights=weights or None,
        param_key=path_options.get('param_key_g', param_key),
        strict=path_options.get('strict_load_g', True),
        tile=tile,
    )


def resolve_source(source: Union[str, os.PathLike], param_key: Optional[str] = 'auto') -> ModelSpec:
    """Read an option file or a checkpoint into a ModelSpec (checkpoints: options from the weights)."""
    path = Path(source)
    if not path.is_file():
        raise SourceError(f'model source not found: {path}')
    if path.suffix.lower() in OPTION_SUFFIXES:
        return _option_file_spec(path, param_key)
    checkpoint = read_checkpoint(path)  # its errors name the file
    try:
        state = extract_state_dict(checkpoint, param_key)
        options = checkpoint_options(path, state)
    except CheckpointError as error:
        raise SourceError(f'{path}: {error}') from error
    check_network(options, METADATA_KEY, str(path))
    return ModelSpec(network=options, scale=options['upscale'], weights=state, param_key=None)


def check_network(network: Dict, path: str, source: str) -> None:
    """Refuse network options the arch's declaration refuses (hat_basicsr.option_check.network_problem),
    naming the option, before anything is built; an unknown type is left to build_network to name."""
    from basicsr.utils.registry import ARCH_REGISTRY

    arch = registered_class(ARCH_REGISTRY, network['type'])
    problem = network_problem(network, path, arch) if arch is not None else None
    if problem:
        raise SourceError(f'{source}: {problem}')


def build_network(network: Dict) -> nn.Module:
    """basicsr.archs.build_network with its failures (unknown type, bad argument) as SourceError."""
    from basicsr.archs import build_network as basicsr_build_network

    try:
        return basicsr_build_network(deepcopy(network))
    except (KeyError, TypeError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise SourceError(f'cannot build network {network.get("type")!r}: {message}') from error


def instantiate(
    spec: ModelSpec, source: Union[str, os.PathLike], device: Union[str, torch.device], allow_random_init: bool = False
) -> nn.Module:
    """The model `spec` describes, with its weights, in eval mode on `device`.

    An option file without `path.pretrain_network_g` is refused unless `allow_random_init`
    (analysis tools that study an untrained network).
    """
    if spec.weights is None and not allow_random_init:
        raise SourceError(f'option file {source} sets no path.pretrain_network_g: there are no weights to load')
    if isinstance(spec.weights, Path) and not spec.weights.is_file():
        raise SourceError(
            f'checkpoint not found: {spec.weights} (path.pretrain_network_g of {source}); {PRETRAINED_README} '
            'says where to get the released weights, or point that option at your own checkpoint'
        )
    model = build_network(spec.network)
    if spec.weights is not None:
        load_weights(model, spec.weights, strict=spec.strict, param_key=spec.param_key)
    device = resolve_device(device) if isinstance(device, str) else device
    return model.eval().to(device)


def load_model(
    source: Union[str, os.PathLike],
    device: Union[str, torch.device],
    param_key: Optional[str] = 'auto',
    allow_random_init: bool = False,
) -> Tuple[nn.Module, int]:
    """(model in eval mode on `device`, scale) from a checkpoint or a BasicSR option file."""
    spec = resolve_source(source, param_key)
    return instantiate(spec, source, device, allow_random_init), spec.scale


def model_channels(model: Union[nn.Module, OnnxModel]) -> int:
    """Input channels of the model: HAT's in_chans, else the first convolution's."""
    channels = getattr(model, 'in_chans', None)
    if channels is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise SourceError(f'cannot tell the input channels of {type(model).__name__}')
        channels = first.in_channels
    return channels

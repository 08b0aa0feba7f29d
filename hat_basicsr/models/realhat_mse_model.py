"""Real-HAT (MSE): HAT trained with an L1 loss on pairs that BasicSR's Real-ESRGAN pipeline
degrades on the fly (two rounds of blur, resize, noise and JPEG, then a sinc filter), as the
HAT release trains its real-world model before the GAN stage.

BasicSR 1.4.2's RealESRNetModel / RealESRGANModel do that degradation, but build their JPEG
simulator, USM sharpener and training-pair pool with `.cuda()`, so they fail without a GPU. The
mixin below builds exactly those on the model's device and leaves every other step (the
degradation itself, the pool logic, the losses) to BasicSR. Inference (whole image or tiles,
padding done by the HAT network) and atomic checkpoints come from HATModel.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Union

import torch
from basicsr.archs import vgg_arch
from basicsr.models.realesrnet_model import RealESRNetModel
from basicsr.utils import DiffJPEG, USMSharp
from basicsr.utils.registry import MODEL_REGISTRY

from hat_basicsr.models.hat_model import HATModel, OptionError
from hat_basicsr.utils.registration import register_once

# Top-level options BasicSR's Real-ESRGAN feed_data reads while synthesising training pairs.
DEGRADATION_OPTIONS = (
    'resize_prob', 'resize_range', 'gaussian_noise_prob', 'noise_range', 'poisson_scale_range', 'gray_noise_prob',
    'jpeg_range', 'second_blur_prob', 'resize_prob2', 'resize_range2', 'gaussian_noise_prob2', 'noise_range2',
    'poisson_scale_range2', 'gray_noise_prob2', 'jpeg_range2', 'gt_size')
VGG19_FILE = 'vgg19-dcbb9e9d.pth'
VGG19_URL = f'https://download.pytorch.org/models/{VGG19_FILE}'


class MissingVGGWeightsError(FileNotFoundError):
    """The perceptual loss needs ImageNet VGG19 weights that are not on this machine."""


def require_options(opt: Dict[str, Any], names: Iterable[str], model: str) -> None:
    """Fail at construction, naming every missing key, instead of a KeyError mid-iteration."""
    missing = [name for name in names if name not in opt]
    if missing:
        raise OptionError(f'{model} needs the top-level option(s) {missing}: Real-ESRGAN degradation and USM '
                          'settings, as in options/train/Real-HAT_MSE_SRx4.yml and Real-HAT_GAN_SRx4.yml')


def require_vgg_weights(train_opt: Dict[str, Any]) -> None:
    """With `perceptual_opt`, make sure BasicSR's VGGFeatureExtractor finds VGG19 weights locally.

    BasicSR reads `basicsr.archs.vgg_arch.VGG_PRETRAIN_PATH` (relative to the working directory)
    and otherwise asks torchvision, which reads its hub cache or downloads. Without either file
    and without network access that download fails deep in torchvision; this says what to do.
    """
    if not train_opt.get('perceptual_opt'):
        return
    local = vgg_arch.VGG_PRETRAIN_PATH
    cached = os.path.join(torch.hub.get_dir(), 'checkpoints', VGG19_FILE)
    if os.path.isfile(local) or os.path.isfile(cached):
        return
    raise MissingVGGWeightsError(
        f"perceptual_opt needs ImageNet VGG19 weights: BasicSR loads '{local}' (relative to the working "
        f'directory, here {os.path.abspath(local)}), else torchvision\'s cache {cached}; neither exists and '
        f'nothing is downloaded at run time. Download {VGG19_URL} on a machine with internet access and put it '
        f"at '{local}' (run from the folder that holds experiments/), or remove perceptual_opt from the "
        'train options.')


class ContiguousDiffJPEG(DiffJPEG):
    """BasicSR's DiffJPEG with a contiguous output. DiffJPEG returns a channels-last view; CPU
    reflect padding keeps that layout, so BasicSR's filter2D (which `.view`s the padded image)
    fails on any blur or sinc filter that follows a JPEG step when training on CPU."""

    def forward(self, x: torch.Tensor, quality: Union[float, torch.Tensor]) -> torch.Tensor:
        return super().forward(x, quality).contiguous()


class RealDegradationMixin:
    """Device-agnostic replacements for the CUDA-only parts of BasicSR's Real-ESRGAN models.

    Put it first in the bases, before RealESRNetModel / RealESRGANModel and HATModel, and call
    `_build_degradation_tools` in place of the BasicSR model's own `__init__` body.
    """

    opt: Dict[str, Any]
    device: torch.device
    lq: torch.Tensor
    gt: torch.Tensor

    def _build_degradation_tools(self, opt: Dict[str, Any]) -> None:
        """The three attributes BasicSR's __init__ sets, on this model's device."""
        self.jpeger = ContiguousDiffJPEG(differentiable=False).to(self.device)
        self.usm_sharpener = USMSharp().to(self.device)
        self.queue_size = opt.get('queue_size', 180)

    def init_training_settings(self) -> None:
        """Check for VGG19 weights before BasicSR builds the losses (and would download them)."""
        require_vgg_weights(self.opt['train'])
        super().init_training_settings()

    @torch.no_grad()
    def _dequeue_and_enqueue(self) -> None:
        """Allocate the training-pair pool on the batch's device; BasicSR's method (which skips its
        own `.cuda()` allocation once the pool exists) then fills, shuffles and swaps it."""
        if not hasattr(self, 'queue_lr'):
            batch = self.lq.size(0)
            if self.queue_size < batch or self.queue_size % batch:
                raise OptionError(f'queue_size {self.queue_size} must be a positive multiple of the batch size '
                                  f'per GPU ({batch})')
            self.queue_lr = self.lq.new_zeros((self.queue_size, *self.lq.shape[1:]))
            self.queue_gt = self.gt.new_zeros((self.queue_size, *self.gt.shape[1:]))
            self.queue_ptr = 0
        super()._dequeue_and_enqueue()


@register_once(MODEL_REGISTRY)
class RealHATMSEModel(RealDegradationMixin, RealESRNetModel, HATModel):
    """HAT on synthetic real-world degradations with pixel losses (the Real-HAT MSE stage).

    Options as BasicSR's RealESRNetModel: the degradation settings, `gt_usm` (train against the
    USM-sharpened GT) and `queue_size` (training-pair pool, a multiple of the batch size).
    """

    def __init__(self, opt: Dict[str, Any]) -> None:
        if opt['is_train'] and opt.get('high_order_degradation', True):
            require_options(opt, DEGRADATION_OPTIONS + ('gt_usm',), type(self).__name__)
        # Skip RealESRNetModel.__init__ (its .cuda() calls); HATModel and SRModel still run.
        super(RealESRNetModel, self).__init__(opt)
        self._build_degradation_tools(opt)

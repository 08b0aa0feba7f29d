"""The parts of BasicSR 1.4.2's Real-ESRGAN models that the Real-HAT models replace or check.

BasicSR's RealESRNetModel / RealESRGANModel degrade training pairs on the fly (two rounds of blur,
resize, noise and JPEG, then a sinc filter), but build their JPEG simulator, USM sharpener and
training-pair pool with `.cuda()`, so they fail without a GPU. RealDegradationMixin builds exactly
those on the model's device and leaves every other step (the degradation itself, the pool logic,
the losses) to BasicSR; the helpers below check the options and the VGG weights those models need
before the first iteration.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Optional, Tuple, Union

import torch

from hat_basicsr.errors import MissingVGGWeightsError, OptionFileError
from hat_basicsr.utils.option_spec import Option, Section

from basicsr.archs import vgg_arch
from basicsr.models.realesrgan_model import RealESRGANModel
from basicsr.models.realesrnet_model import RealESRNetModel
from basicsr.utils import DiffJPEG, USMSharp


def _probability(name: str, doc: str) -> Option:
    return Option(name, 'number', doc, required=True, minimum=0, maximum=1)


def _range(name: str, doc: str, maximum: Optional[float] = None) -> Option:
    return Option(name, 'numbers', doc, required=True, minimum=0, maximum=maximum, length=2)


def _degradation_round(suffix: str, which: str) -> Tuple[Option, ...]:
    return (
        Option(
            f'resize_prob{suffix}',
            'numbers',
            f'{which} resize: probabilities of up, down and keep.',
            required=True,
            minimum=0,
            maximum=1,
            length=3,
        ),
        _range(f'resize_range{suffix}', f'{which} resize: range of the random scale factor.'),
        _probability(f'gaussian_noise_prob{suffix}', f'{which} noise: probability of Gaussian (else Poisson) noise.'),
        _range(f'noise_range{suffix}', f'{which} noise: range of the Gaussian sigma (0-255).'),
        _range(f'poisson_scale_range{suffix}', f'{which} noise: range of the Poisson scale.'),
        _probability(f'gray_noise_prob{suffix}', f'{which} noise: probability of the same noise on every channel.'),
        _range(f'jpeg_range{suffix}', f'{which} JPEG: range of the quality.', maximum=100),
    )


# Top-level options BasicSR's Real-ESRGAN feed_data reads while synthesising training pairs (all
# needed then), and the training-pair pool's; the section is open, the top level holds BasicSR's own.
DEGRADATION_OPTIONS = Section(
    (
        *_degradation_round('', 'First'),
        _probability('second_blur_prob', 'Probability of the second blur.'),
        *_degradation_round('2', 'Second'),
        Option(
            'gt_size',
            'integer',
            'GT patch cropped after the degradation; a multiple of scale.',
            required=True,
            minimum=1,
        ),
        Option(
            'queue_size', 'integer', 'Training-pair pool (default 180), a multiple of the batch per GPU.', minimum=1
        ),
        Option('high_order_degradation', 'boolean', 'Synthesise the LQ on the fly (default true).'),
    ),
    doc='Real-ESRGAN degradations that synthesise the training pairs.',
    closed=False,
)


def require_options(opt: Dict[str, Any], names: Iterable[str], model: str, section: str = 'top-level') -> None:
    """Fail at construction, naming every missing key, instead of an error mid-iteration."""
    missing = [name for name in names if name not in opt]
    if missing:
        raise OptionFileError(
            f'{model} needs the {section} option(s) {missing}, as in '
            'options/train/Real-HAT_MSE_SRx4.yml and Real-HAT_GAN_SRx4.yml'
        )


def vgg_weights_url(vgg_type: str) -> str:
    """Where torchvision downloads the ImageNet weights of `vgg_type` (vgg19 -> .../vgg19-dcbb9e9d.pth)."""
    from torchvision.models import get_model_weights

    return get_model_weights(vgg_type).IMAGENET1K_V1.url


def require_vgg_weights(train_opt: Dict[str, Any]) -> None:
    """With `perceptual_opt`, make sure BasicSR's VGGFeatureExtractor finds its VGG weights locally.

    BasicSR loads `basicsr.archs.vgg_arch.VGG_PRETRAIN_PATH` (relative to the working directory,
    VGG19 weights) into whatever `vgg_type` says when that file exists, and otherwise asks
    torchvision, which reads its hub cache or downloads. Without the file and without network
    access the download fails deep in torchvision; this says what to do.
    """
    perceptual = train_opt.get('perceptual_opt')
    if not perceptual:
        return
    vgg_type = perceptual.get('vgg_type', 'vgg19')
    local = vgg_arch.VGG_PRETRAIN_PATH
    if os.path.isfile(local):
        if vgg_type == 'vgg19':
            return
        raise OptionFileError(
            f"perceptual_opt.vgg_type is {vgg_type}, but BasicSR loads '{local}' (VGG19 weights) into "
            'any VGG when that file exists: use vgg_type: vgg19, or move the file away'
        )
    url = vgg_weights_url(vgg_type)
    cached = os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(url))
    if os.path.isfile(cached):
        return
    where = (
        f"'{local}' (relative to the working directory, here {os.path.abspath(local)}), else "
        if vgg_type == 'vgg19'
        else ''
    )
    raise MissingVGGWeightsError(
        f"perceptual_opt needs ImageNet {vgg_type} weights: BasicSR loads {where}torchvision's cache {cached}; "
        f'none exists and nothing is downloaded at run time. Download {url} on a machine with internet access '
        f"and put it at '{local if vgg_type == 'vgg19' else cached}', or remove perceptual_opt from the train "
        'options.'
    )


class ContiguousDiffJPEG(DiffJPEG):
    """BasicSR's DiffJPEG with a contiguous output. DiffJPEG returns a channels-last view; CPU
    reflect padding keeps that layout, so BasicSR's filter2D (which `.view`s the padded image)
    fails on any blur or sinc filter that follows a JPEG step when training on CPU."""

    def forward(self, x: torch.Tensor, quality: Union[float, torch.Tensor]) -> torch.Tensor:
        return super().forward(x, quality).contiguous()


class RealDegradationMixin:
    """Device-agnostic replacements for the CUDA-only parts of BasicSR's Real-ESRGAN models.

    Put it directly before RealESRNetModel / RealESRGANModel in the bases (after HATModelMixin). It
    also takes over what BasicSR's nondist_validation did, which BasicSRFixesMixin replaces: clearing
    is_train while validating.
    """

    opt: Dict[str, Any]
    device: torch.device
    is_train: bool
    lq: torch.Tensor
    gt: torch.Tensor

    def __init__(self, opt: Dict[str, Any]) -> None:
        """Run the __init__ chain past the BasicSR model that follows (its body builds with `.cuda()`),
        then build those parts on the model's device."""
        mro = type(self).__mro__
        basicsr_model = mro[mro.index(RealDegradationMixin) + 1]
        if basicsr_model not in (RealESRNetModel, RealESRGANModel):
            raise TypeError(
                f'{type(self).__name__}: RealDegradationMixin must come directly before RealESRNetModel or '
                f'RealESRGANModel in the bases, not before {basicsr_model.__name__}'
            )
        super(basicsr_model, self).__init__(opt)
        self._build_degradation_tools(opt)

    def _build_degradation_tools(self, opt: Dict[str, Any]) -> None:
        """The three attributes BasicSR's __init__ sets, on this model's device."""
        self.jpeger = ContiguousDiffJPEG(differentiable=False).to(self.device)
        self.usm_sharpener = USMSharp().to(self.device)
        self.queue_size = opt.get('queue_size', 180)

    def init_training_settings(self) -> None:
        """Check for VGG19 weights before BasicSR builds the losses (and would download them)."""
        require_vgg_weights(self.opt['train'])
        super().init_training_settings()

    def validation(self, dataloader: Any, current_iter: Any, tb_logger: Any, save_img: bool = False) -> None:
        """Validate on the dataset's own pairs: BasicSR's feed_data degrades whenever is_train is set,
        and BasicSR's Real-ESRGAN models clear it in their nondist_validation, which
        BasicSRFixesMixin's replaces (under DDP too); so it is cleared here, around the dispatch."""
        self.is_train = False
        try:
            super().validation(dataloader, current_iter, tb_logger, save_img)
        finally:
            self.is_train = True

    @torch.no_grad()
    def _dequeue_and_enqueue(self) -> None:
        """Allocate the training-pair pool on the batch's device; BasicSR's method (which skips its
        own `.cuda()` allocation once the pool exists) then fills, shuffles and swaps it."""
        if not hasattr(self, 'queue_lr'):
            batch = self.lq.size(0)
            if self.queue_size < batch or self.queue_size % batch:
                raise OptionFileError(
                    f'queue_size {self.queue_size} must be a positive multiple of the batch size per GPU ({batch})'
                )
            self.queue_lr = self.lq.new_zeros((self.queue_size, *self.lq.shape[1:]))
            self.queue_gt = self.gt.new_zeros((self.queue_size, *self.gt.shape[1:]))
            self.queue_ptr = 0
        super()._dequeue_and_enqueue()

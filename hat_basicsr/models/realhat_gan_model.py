"""Real-HAT-GAN: the Real-HAT MSE model fine-tuned as a GAN (L1 + VGG19 perceptual + GAN loss
against BasicSR's U-Net SN discriminator) on the same synthetic real-world degradations.

Everything is BasicSR 1.4.2's RealESRGANModel (degradation, training-pair pool, USM-sharpened
targets chosen by `l1_gt_usm` / `percep_gt_usm` / `gan_gt_usm`, the generator and discriminator
steps) except its CUDA-only parts, which RealDegradationMixin builds on the model's device, and
what HATModelMixin adds around it (inference, acceleration, bf16 steps, checkpoints and their
retention, training stops).
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict

from hat_basicsr.models.hat_model import HATModelMixin
from hat_basicsr.models.real_degradation import DEGRADATION_OPTIONS, RealDegradationMixin, require_options
from hat_basicsr.utils.option_spec import Option, Section
from hat_basicsr.utils.registration import register_once

from basicsr.models.realesrgan_model import RealESRGANModel
from basicsr.utils.registry import MODEL_REGISTRY

# Which losses compare against the USM-sharpened GT; RealESRGANModel reads all three every step.
USM_TARGET_OPTIONS = Section(
    tuple(
        Option(f'{loss}_gt_usm', 'boolean', f'The {what} loss compares against the USM-sharpened GT.', required=True)
        for loss, what in (('l1', 'L1'), ('percep', 'perceptual'), ('gan', 'GAN'))
    ),
    closed=False,
)


@register_once(MODEL_REGISTRY)
class RealHATGANModel(HATModelMixin, RealDegradationMixin, RealESRGANModel):
    """HAT generator trained adversarially on synthetic real-world degradations.

    Needs `network_d` (e.g. UNetDiscriminatorSN), `optim_d`, `gan_opt`; `perceptual_opt` needs
    local VGG19 weights (see require_vgg_weights).
    """

    OPTIONS: ClassVar[Section] = DEGRADATION_OPTIONS.merged(
        USM_TARGET_OPTIONS,
        doc="RealHATGANModel's top-level keys: the degradations and which losses compare against the USM-sharpened GT.",
    )

    def __init__(self, opt: Dict[str, Any]) -> None:
        if opt['is_train']:
            synthetic = opt.get('high_order_degradation', True)
            required = (self.OPTIONS if synthetic else USM_TARGET_OPTIONS).required()
            require_options(opt, required + ['network_d'], type(self).__name__)
            require_options(opt['train'], ('optim_d', 'gan_opt'), type(self).__name__, section='train')
        super().__init__(opt)

"""Real-HAT-GAN: the Real-HAT MSE model fine-tuned as a GAN (L1 + VGG19 perceptual + GAN loss
against BasicSR's U-Net SN discriminator) on the same synthetic real-world degradations.

Everything is BasicSR 1.4.2's RealESRGANModel (degradation, training-pair pool, USM-sharpened
targets chosen by `l1_gt_usm` / `percep_gt_usm` / `gan_gt_usm`, the generator and discriminator
steps) except its CUDA-only parts, which RealDegradationMixin builds on the model's device, and
inference/checkpoints, which come from HATModel.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict

from hat_basicsr.models.hat_model import HATModel
from hat_basicsr.models.real_degradation import DEGRADATION_OPTIONS, RealDegradationMixin, require_options
from hat_basicsr.utils.autocast import autocast_context
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
class RealHATGANModel(RealDegradationMixin, RealESRGANModel, HATModel):
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
        # Skip RealESRGANModel.__init__ (its .cuda() calls); SRGANModel, HATModel, SRModel still run.
        super(RealESRGANModel, self).__init__(opt)
        self._build_degradation_tools(opt)

    # RealESRGANModel's step and SRGANModel's training set-up come before HATModel's in the MRO and
    # do not chain to them, so HATModel's bf16 autocast, EMA acceleration and non-finite loss check
    # are applied here.

    def init_training_settings(self) -> None:
        super().init_training_settings()
        self._accelerate_ema()

    def optimize_parameters(self, current_iter: int) -> None:
        with autocast_context(self.device, self.acceleration.bf16):
            super().optimize_parameters(current_iter)
        self.stop_on_non_finite_loss(current_iter)

"""Real-HAT (MSE): HAT trained with an L1 loss on pairs that BasicSR's Real-ESRGAN pipeline
degrades on the fly (two rounds of blur, resize, noise and JPEG, then a sinc filter), as the
HAT release trains its real-world model before the GAN stage.

The degradation is BasicSR 1.4.2's RealESRNetModel, with its CUDA-only parts built on the
model's device (hat_basicsr.models.real_degradation). Inference (whole image or tiles, padding
done by the HAT network), acceleration and atomic checkpoints come from HATModelMixin.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict

from hat_basicsr.models.hat_model import HATModelMixin
from hat_basicsr.models.real_degradation import DEGRADATION_OPTIONS, RealDegradationMixin, require_options
from hat_basicsr.utils.option_spec import Option, Section
from hat_basicsr.utils.registration import register_once

from basicsr.models.realesrnet_model import RealESRNetModel
from basicsr.utils.registry import MODEL_REGISTRY


@register_once(MODEL_REGISTRY)
class RealHATMSEModel(HATModelMixin, RealDegradationMixin, RealESRNetModel):
    """HAT on synthetic real-world degradations with pixel losses (the Real-HAT MSE stage).

    Options as BasicSR's RealESRNetModel: the degradation settings, `gt_usm` (train against the
    USM-sharpened GT) and `queue_size` (training-pair pool, a multiple of the batch size).
    """

    OPTIONS: ClassVar[Section] = DEGRADATION_OPTIONS.merged(
        Section(
            (Option('gt_usm', 'boolean', 'Train against the USM-sharpened GT.', required=True),),
            closed=False,
        ),
        doc="RealHATMSEModel's top-level keys: the degradations that synthesise its training pairs, and gt_usm.",
    )

    def __init__(self, opt: Dict[str, Any]) -> None:
        if opt['is_train'] and opt.get('high_order_degradation', True):
            require_options(opt, self.OPTIONS.required(), type(self).__name__)
        super().__init__(opt)

"""HAT's model behaviour, once for every model of this package: HATModelMixin adds tiled inference,
the `acceleration` options (bf16 autocast in training, EMA acceleration) and the scale check to a
BasicSR model, and brings BasicSRFixesMixin (CPU support, safe checkpoints, training stops, what
this package changes in BasicSR for any network). HATModel is BasicSR's SRModel (losses, EMA,
optimizers, schedulers, validation, metrics) with it."""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import Tensor, nn

from hat_basicsr.archs.acceleration import AccelerationOptions, apply_acceleration, bf16_inference
from hat_basicsr.errors import OptionFileError
from hat_basicsr.models.basicsr_fixes import BasicSRFixesMixin
from hat_basicsr.utils.autocast import autocast_context
from hat_basicsr.utils.registration import register_once
from hat_basicsr.utils.tiling import TileOptions, off_grid_warning, tiled_forward

from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY


class HATModelMixin(BasicSRFixesMixin):
    """HAT's behaviour for a BasicSR model. Put it first in the bases (before the BasicSR model class,
    and before RealDegradationMixin where there is one): every method chains through super(), so a
    BasicSR subclass's own step or training set-up (SRGANModel's, RealESRGANModel's) runs inside it.

    Padding to the window size is the network's own job (HAT pads any input and crops to scale x
    input), so this adds tiling and the `acceleration` options (attn_impl, use_checkpoint, bf16,
    channels_last, compile; see hat_basicsr.archs.acceleration). Without `acceleration` it computes
    what the release computes."""

    def __init__(self, opt: Dict[str, Any]) -> None:
        self.tile = TileOptions.from_dict(opt.get('tile'))
        self.acceleration = AccelerationOptions.from_dict(opt.get('acceleration'))
        super().__init__(opt)
        upscale = getattr(self.get_bare_model(self.net_g), 'upscale', opt['scale'])
        if upscale != opt['scale']:
            raise OptionFileError(f"network_g upscales by {upscale} but the option file's scale is {opt['scale']}")
        if self.tile is not None:
            warning = off_grid_warning(
                self.tile.tile_size, self.tile.tile_pad, self.get_bare_model(self.net_g).window_size
            )
            if warning:
                get_root_logger().warning(warning)

    def model_to_device(self, net: nn.Module) -> nn.Module:
        """Apply the acceleration options to the generator before BasicSR moves and wraps it (a GAN's
        discriminator, already bound to `net_d` when it gets here, is left as it is)."""
        if net is not getattr(self, 'net_d', None):
            net = apply_acceleration(net, self.acceleration)
        return super().model_to_device(net)

    def init_training_settings(self) -> None:
        """The EMA copy is built with `.to(device)`, not through model_to_device: accelerate it here."""
        super().init_training_settings()
        if hasattr(self, 'net_g_ema'):
            apply_acceleration(self.net_g_ema, self.acceleration)

    def optimize_parameters(self, current_iter: int) -> None:
        """The BasicSR model's step (SRModel's, or a GAN's generator and discriminator steps) and
        BasicSRFixesMixin's non-finite loss check, under bf16 autocast when enabled. Autocast only
        changes the forward ops (network and loss); their backward ops run in the dtypes chosen for
        the forward, and the optimizer and EMA updates are not autocast ops, so weights stay float32."""
        with autocast_context(self.device, self.acceleration.bf16):
            super().optimize_parameters(current_iter)

    def _infer(self, net: nn.Module, lq: Tensor) -> Tensor:
        """The one place inference happens: whole image, or tiles when `tile` is set. With bf16 on CPU
        the weights are cast for each call (a few ms), so validation sees the current weights."""
        forward = bf16_inference(net, self.device, self.acceleration.bf16)
        if self.tile is None:
            return forward(lq).float()
        return tiled_forward(forward, lq, self.opt['scale'], self.tile.tile_size, self.tile.tile_pad).float()

    def test(self) -> None:
        """Run the EMA network if there is one, else net_g, in eval mode, restoring its mode after
        (net_g keeps training after a validation). The bare module is used: a DDP wrapper would
        expect every rank in a forward that only rank 0 runs."""
        net = self.get_bare_model(getattr(self, 'net_g_ema', self.net_g))
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = self._infer(net, self.lq)
        net.train(was_training)


@register_once(MODEL_REGISTRY)
class HATModel(HATModelMixin, SRModel):
    """SRModel for HAT (see HATModelMixin)."""

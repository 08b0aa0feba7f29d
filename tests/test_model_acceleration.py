"""HATModel's `acceleration` options: defaults keep the release's arithmetic, every switch reaches
net_g and its EMA copy, bf16 training and inference run, bad options are named."""

import pytest
import torch

from hat_basicsr.errors import OptionFileError

from helpers import in_process_model


def _batch(scale: int = 2):
    lq = torch.rand(2, 3, 16, 16)
    return {'lq': lq, 'gt': torch.nn.functional.interpolate(lq, scale_factor=scale, mode='bicubic')}


def test_defaults_are_the_release_arithmetic(sr_data, tmp_path):
    model = in_process_model(sr_data, tmp_path)
    assert not model.net_g.grad_checkpointing
    model.feed_data(_batch())
    model.test()
    fast = model.output
    model.net_g_ema.set_attn_impl('reference')
    model.test()
    assert fast.dtype == torch.float32
    assert (fast - model.output).abs().max() < 1e-5


def test_every_switch_reaches_both_networks_and_bf16_trains(sr_data, tmp_path):
    acceleration = {'attn_impl': 'reference', 'use_checkpoint': True, 'bf16': True, 'channels_last': True}
    model = in_process_model(sr_data, tmp_path, acceleration=acceleration)
    for net in (model.net_g, model.net_g_ema):
        assert net.attn_impl == 'reference' and net.grad_checkpointing
        assert net.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    before = model.net_g.conv_first.weight.detach().clone()
    model.feed_data(_batch())
    model.optimize_parameters(1)
    assert torch.isfinite(torch.tensor(model.log_dict['l_pix']))
    assert model.net_g.conv_first.weight.dtype == torch.float32
    assert not torch.equal(before, model.net_g.conv_first.weight)
    model.test()
    assert model.output.dtype == torch.float32 and model.output.shape == (2, 3, 32, 32)
    assert model.net_g.training
    with torch.no_grad():  # bf16 validation casts the EMA weights of each call, never a stale copy
        assert (model.output - model.net_g_ema(model.lq)).abs().max() < 0.02
        model.net_g_ema.conv_last.bias.add_(0.25)
    before = model.output
    model.test()
    assert (model.output - before).mean() > 0.2


@pytest.mark.parametrize(
    'acceleration, match',
    [
        ({'fp16': True}, r'acceleration\.fp16 is not an option of acceleration'),
        ({'attn_impl': 'flash'}, "acceleration.attn_impl: got 'flash', expected one of"),
        ({'bf16': 'yes'}, "acceleration.bf16: got 'yes', expected true or false"),
        ({'compile': 3}, 'acceleration.compile: got 3, expected true, false or a mapping'),
        (['bf16'], r"acceleration: got \['bf16'\], expected a mapping"),
    ],
)
def test_bad_acceleration_options_are_named(sr_data, tmp_path, acceleration, match):
    with pytest.raises(OptionFileError, match=match):
        in_process_model(sr_data, tmp_path, acceleration=acceleration)

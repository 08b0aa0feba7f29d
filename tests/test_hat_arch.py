"""The HAT architecture against the release: outputs, parameter counts, layout, sizes, options."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hat_basicsr import HAT
from hat_basicsr.archs.hat_arch import OCAB, WindowAttention, pad_to_multiple
from hat_basicsr.archs.hat_config import RELEASE_OPTIONS, RELEASE_VARIANTS
from hat_basicsr.errors import HATArgumentError
from hat_basicsr.utils.weights import load_weights, read_state_dict

from basicsr.archs import build_network

from reference_fixtures import (
    NAMES,
    RELEASE_PARAMS,
    fixture_cases,
    fixture_model,
    fixture_options,
    fixture_weights_path,
)

COMMON, VARIANTS = RELEASE_OPTIONS, RELEASE_VARIANTS


def meta_variant(name: str, upscale: int) -> HAT:
    with torch.device('meta'):
        return HAT(upscale=upscale, **COMMON, **VARIANTS[name])


@pytest.mark.parametrize('name', NAMES)
def test_reproduces_release_outputs(name):
    model = fixture_model(name)
    with torch.no_grad():
        for lq, expected in fixture_cases(name):
            assert (model(lq) - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize('name', NAMES)
def test_fixture_state_dict_layout_is_the_release_layout(name):
    release = torch.load(f'tests/fixtures/{name}.pth', weights_only=True)['params_ema']
    model = HAT(**fixture_options(name))
    ours = model.state_dict()
    assert list(ours) == list(release)
    assert all(ours[key].shape == release[key].shape for key in ours)
    for buffer in ('relative_position_index_SA', 'relative_position_index_OCA'):
        assert ours[buffer].dtype == torch.int64 and torch.equal(ours[buffer], release[buffer])


@pytest.mark.parametrize('variant', sorted(VARIANTS))
@pytest.mark.parametrize('scale_index, upscale', [(0, 2), (1, 3), (2, 4)])
def test_parameter_counts_of_release_variants(variant, scale_index, upscale):
    model = meta_variant(variant, upscale)
    assert sum(p.numel() for p in model.parameters()) == RELEASE_PARAMS[variant][scale_index]


def test_key_counts_and_persistent_buffers():
    assert len(meta_variant('HAT', 4).state_dict()) == 864
    model = meta_variant('HAT-L', 4)
    assert len(model.state_dict()) == 1710
    persistent = [name for name in model.state_dict() if name not in dict(model.named_parameters())]
    assert persistent == ['relative_position_index_SA', 'relative_position_index_OCA']
    assert model.relative_position_index_SA.shape == (256, 256)
    assert model.relative_position_index_OCA.shape == (256, 576)


def pad_run_crop(model: HAT, lq: torch.Tensor) -> torch.Tensor:
    """What the release's model wrapper does around a network that only takes window multiples."""
    height, width = lq.shape[-2:]
    padded = pad_to_multiple(lq, model.window_size)
    assert padded.shape[-2] % model.window_size == 0 and padded.shape[-1] % model.window_size == 0
    with torch.no_grad():
        out = model(padded)
    return out[..., : height * model.upscale, : width * model.upscale]


@pytest.mark.parametrize(
    'shape', [(1, 3, 1, 1), (1, 3, 1, 5), (1, 3, 2, 3), (1, 3, 3, 17), (2, 3, 9, 30), (3, 3, 31, 8), (1, 3, 17, 40)]
)
def test_any_input_size_gives_scale_times_size_and_equals_pad_run_crop(shape):
    model = fixture_model('hat_tiny_x4_w8')
    lq = torch.rand(shape)
    with torch.no_grad():
        out = model(lq)
    assert out.shape == (shape[0], 3, shape[2] * 4, shape[3] * 4)
    assert torch.isfinite(out).all()
    assert (out - pad_run_crop(model, lq)).abs().max() < 1e-5


def test_padding_matches_release_reflect_and_documented_fallback():
    lq = torch.rand(1, 3, 13, 29)
    reflect = F.pad(lq, (0, 3, 0, 3), mode='reflect')
    assert torch.equal(pad_to_multiple(lq, 8), reflect)
    for height, width in [(1, 1), (2, 3), (3, 17), (5, 2), (2, 1)]:
        small = torch.arange(height * width, dtype=torch.float32).view(1, 1, height, width)
        padded = pad_to_multiple(small, 16)[0, 0].numpy()
        expected = small[0, 0].numpy()
        for axis, side in enumerate((height, width)):
            widths = [(0, 0), (0, 0)]
            widths[axis] = (0, -(-side // 16) * 16 - side)
            expected = np.pad(expected, widths, mode='reflect' if side > 1 else 'edge')
        assert np.array_equal(padded, expected)


def test_batched_input_equals_per_image_runs():
    model = fixture_model('hat_tiny_x2_gray_identity')
    lq = torch.rand(3, 1, 13, 29)
    with torch.no_grad():
        batched = model(lq)
        single = torch.cat([model(lq[i : i + 1]) for i in range(3)])
    assert (batched - single).abs().max() < 1e-5


def test_builds_through_basicsr_registry():
    net = build_network({'type': 'HAT', **fixture_options('hat_tiny_x4_w8')})
    assert isinstance(net, HAT) and net.upscale == 4


def test_derived_buffers_are_non_persistent_and_biases_follow_weight_changes():
    model = fixture_model('hat_tiny_x4_w8')
    lq = torch.rand(1, 3, 24, 24)
    masks = model.shift_seam_masks
    assert masks.shape == (3, 64, 64) and set(masks.unique().tolist()) == {0.0, -100.0}
    assert 'mean' not in model.state_dict() and 'shift_seam_masks' not in model.state_dict()
    with torch.no_grad():
        first = model(lq)
        assert torch.equal(model(lq), first)
    # New weights must not be served stale gathered biases.
    fresh = HAT(**fixture_options('hat_tiny_x4_w8')).eval()
    model.load_state_dict(fresh.state_dict())
    with torch.no_grad():
        assert not torch.allclose(model(lq), first)
        assert torch.allclose(model(lq), fresh(lq), atol=1e-6)
    model.double()
    assert model.shift_seam_masks.dtype == torch.float64
    with torch.no_grad():
        assert model(lq.double()).dtype == torch.float64


def test_gradient_checkpointing_gives_identical_gradients():
    options = {**fixture_options('hat_tiny_x4_w8'), 'drop_path_rate': 0.2}
    torch.manual_seed(0)
    plain = HAT(**options).train()
    checkpointed = HAT(**options, use_checkpoint=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    lq = torch.rand(2, 3, 20, 20)
    grads = []
    for model in (plain, checkpointed):
        torch.manual_seed(123)
        model(lq).square().mean().backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    assert checkpointed.grad_checkpointing and not plain.grad_checkpointing
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-6, rtol=1e-5), name


def test_checkpointing_really_recomputes():
    """With checkpointing on, blocks run again during backward (a pre-hook: recomputation stops as
    soon as the saved tensors are rebuilt, so a forward hook may never fire)."""
    model = HAT(**fixture_options('hat_tiny_x4_w8'), use_checkpoint=True).train()
    calls = []
    model.layers[0].residual_group.blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))
    model(torch.rand(1, 3, 16, 16)).mean().backward()
    assert len(calls) == 2


@pytest.mark.parametrize(
    'argument, overrides',
    [
        ('embed_dim', dict(embed_dim=30, num_heads=[4, 4])),
        ('depths', dict(depths=[2, 2], num_heads=[6])),
        ('overlap_ratio', dict(window_size=8, overlap_ratio=0.125)),
        ('upscale', dict(upscale=5)),
        ('upscale', dict(upscale=6)),
        ('upsampler', dict(upsampler='pixelshuffledirect')),
        ('upsampler', dict(upsampler='')),
        ('resi_connection', dict(resi_connection='3conv')),
        ('img_size', dict(img_size=4, window_size=8)),
        ('compress_ratio', dict(embed_dim=24, depths=[1], num_heads=[6], compress_ratio=32)),
        ('squeeze_factor', dict(embed_dim=24, depths=[1], num_heads=[6], squeeze_factor=25)),
        ('window_size', dict(window_size=1)),
        ('compress_ratio', dict(compress_ratio=0)),
        ('squeeze_factor', dict(squeeze_factor=0)),
        ('img_range', dict(img_range=0)),
        ('mlp_ratio', dict(mlp_ratio=-1)),
        ('embed_dim', dict(embed_dim='16')),
        ('depths', dict(depths=2)),
        ('num_heads', dict(num_heads=[2.0])),
        ('upscale', dict(upscale=True)),
        ('embed_dim', dict(embed_dim=16.0)),
        ('img_size', dict(img_size=[32])),
        ('drop_path_rate', dict(drop_path_rate=1.5)),
        ('attn_impl', dict(attn_impl='flash')),
    ],
)
def test_invalid_hyperparameters_raise_value_error_naming_the_argument(argument, overrides):
    options = {**fixture_options('hat_tiny_x4_w8'), **overrides}
    with pytest.raises(HATArgumentError, match=f'^HAT: invalid {argument}: got ') as error:
        HAT(**options)
    assert error.value.argument == argument and isinstance(error.value, ValueError)


def test_release_defaults_and_unknown_arguments():
    # The release's own defaults (window 7, overlap 0.5, no upsampler) cannot run: no reconstruction
    # head is built and OCAB would need an odd padding. Both are refused up front.
    with pytest.raises(ValueError, match='upsampler'):
        HAT()
    with pytest.raises(ValueError, match='overlap_ratio'):
        HAT(upsampler='pixelshuffle')
    model = HAT(upsampler='pixelshuffle', window_size=8)
    assert model.upscale == 2 and model.embed_dim == 96 and model.img_range == 1.0
    assert len(model.layers) == 4 and model.layers[0].residual_group.blocks[1].shift_size == 4
    assert model.layers[0].residual_group.blocks[0].mlp.fc1.out_features == 96 * 4
    with pytest.raises(TypeError, match="unexpected keyword argument 'embed_dims'"):
        HAT(upsampler='pixelshuffle', embed_dims=96)


def test_wrong_input_shape_is_explained():
    model = fixture_model('hat_tiny_x2_gray_identity')
    with pytest.raises(ValueError, match=r'\(batch, 1, height, width\)'):
        model(torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize('name', NAMES)
def test_reconstruction_in_strips_reproduces_release_outputs(name):
    """Strips of a few rows (each fixture's head has a different reach: x2, x3, x4) give the
    release's outputs, and do run in strips."""
    model = fixture_model(name)
    model.reconstruction_strip_pixels = 1  # one input row per strip
    strips = []
    model.conv_last.register_forward_hook(lambda module, inputs, output: strips.append(output.shape[-2]))
    with torch.no_grad():
        for lq, expected in fixture_cases(name):
            strips.clear()
            assert (model(lq) - expected).abs().max().item() < 1e-5
            padded_height = -(-lq.shape[-2] // model.window_size) * model.window_size
            assert len(strips) == padded_height


def test_reconstruction_is_not_stripped_when_autograd_records():
    model = fixture_model('hat_tiny_x4_w8')
    model.reconstruction_strip_pixels = 32  # two rows of 16
    calls = []
    model.conv_last.register_forward_hook(lambda module, inputs, output: calls.append(output.shape))
    lq = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        stripped = model(lq)
    assert len(calls) == 8
    calls.clear()
    whole = model(lq)
    assert calls == [(1, 3, 64, 64)] and whole.requires_grad
    assert (whole - stripped).abs().max() < 1e-5


def test_forward_keeps_no_state_that_can_go_stale():
    """Nothing derived from the weights survives a forward: writes through `.data` (BasicSR's EMA),
    fused optimizer steps and inference-mode calls cannot leave stale or unusable tensors behind."""
    torch.manual_seed(0)
    model = HAT(**fixture_options('hat_tiny_x4_w8')).eval()
    lq = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        before = model(lq)
    table = model.layers[0].residual_group.blocks[1].attn.relative_position_bias_table
    table.data.add_(torch.randn_like(table) * 10)  # no version-counter bump
    with torch.no_grad():
        after = model(lq)
    reference = HAT(**fixture_options('hat_tiny_x4_w8'), attn_impl='reference').eval()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (after - before).abs().max() > 1e-3 and torch.allclose(after, reference(lq), atol=1e-5)
    model.requires_grad_(False)  # what LAM does after an inference-mode upscale
    pixels = lq.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(pixels).sum(), pixels)
    assert gradient.abs().sum() > 0


@pytest.mark.parametrize('name', NAMES)
def test_built_on_the_meta_device_then_materialised_reproduces_release_outputs(name):
    """to_empty() leaves every buffer uninitialised (here: NaN, or a huge index); the mean and the seam
    masks are in no state dict, and load_weights takes the derived indices a checkpoint lacks from
    the model, so init_non_persistent_buffers must refill them all."""
    with torch.device('meta'):
        model = HAT(**fixture_options(name))
    model.to_empty(device='cpu')
    for buffer in model.buffers():
        buffer.fill_(float('nan') if buffer.is_floating_point() else 10**6)
    model.init_non_persistent_buffers()
    state = {
        key: value
        for key, value in read_state_dict(fixture_weights_path(name)).items()
        if not key.startswith('relative_position_index')
    }
    load_weights(model, state)
    with torch.no_grad():
        for lq, expected in fixture_cases(name):
            assert (model.eval()(lq) - expected).abs().max().item() < 1e-5


def test_attn_impl_of_the_constructor_reaches_every_attention_module():
    model = HAT(**fixture_options('hat_tiny_x4_w8'), attn_impl='reference')
    impls = {module.attn_impl for module in model.modules() if isinstance(module, (WindowAttention, OCAB))}
    assert model.attn_impl == 'reference' and impls == {'reference'}

"""Fused attention (attn_impl='sdpa') against the release's arithmetic, bf16, fp16 refusal,
torch.compile and the acceleration options."""

import pytest
import torch
from skimage import data
from torch._dynamo.testing import CompileCounter

from hat_basicsr import HAT
from hat_basicsr.archs.acceleration import (
    AccelerationOptions,
    apply_acceleration,
    bf16_inference,
    compile_for_inference,
)
from hat_basicsr.archs.attention import attention, reference_attention, sdpa_attention
from hat_basicsr.archs.hat_arch import build_seam_masks, over_seam_regions, shift_window_mask
from hat_basicsr.utils.autocast import autocast_context

from helpers import TINY_OPTIONS, photo_crops
from reference_fixtures import NAMES, fixture_cases, fixture_model, fixture_options

# One unshifted and one shifted HAB plus an OCAB: every attention path, small enough to trace fast.
TINY = {**TINY_OPTIONS, 'embed_dim': 12, 'depths': [2], 'compress_ratio': 3, 'upscale': 2}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize('impl', ['sdpa', 'reference'])
@pytest.mark.parametrize('name', NAMES)
def test_both_paths_reproduce_release_fixtures(name, impl):
    model = fixture_model(name, attn_impl=impl)
    with torch.no_grad():
        for lq, expected in fixture_cases(name):
            assert max_diff(model(lq), expected) < 1e-5


def test_default_is_sdpa_and_the_switch_reaches_every_attention():
    model = fixture_model('hat_tiny_x4_w8')
    attention_modules = [m for m in model.modules() if hasattr(m, 'attn_impl') and m is not model]
    assert model.attn_impl == 'sdpa' and len(attention_modules) == 2 * 2 + 2
    model.set_attn_impl('reference')
    assert {m.attn_impl for m in attention_modules} == {'reference'}
    with pytest.raises(ValueError, match='attn_impl'):
        model.set_attn_impl('flash')
    with pytest.raises(ValueError, match='attn_impl'):
        HAT(**fixture_options('hat_tiny_x4_w8'), attn_impl='xformers')


@pytest.mark.parametrize('shape', [(2, 3, 21, 35), (1, 3, 8, 8), (1, 3, 5, 30), (3, 3, 17, 9)])
def test_sdpa_equals_reference_on_random_weights_and_sizes(shape):
    """Padded sizes, batch > 1, and window grids with 1 x 1, 1 x n, n x 1 and n x m windows."""
    torch.manual_seed(0)
    model = HAT(**fixture_options('hat_tiny_x4_w8')).eval()
    lq = torch.rand(shape)
    with torch.no_grad():
        fast = model(lq)
        model.set_attn_impl('reference')
        assert max_diff(fast, model(lq)) < 1e-5


@pytest.mark.parametrize('grid', [(1, 1), (1, 3), (3, 1), (2, 2), (3, 4)])
@pytest.mark.parametrize('impl', ['sdpa', 'reference'])
def test_seam_windows_equal_the_release_full_shift_mask(grid, impl):
    """Interior windows without mask plus three seam masks == the release's per-window mask."""
    window, shift, heads, batch = 4, 2, 3, 2
    n = window * window
    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, *grid, heads, n, 5) for _ in range(3))
    bias = torch.randn(heads, n, n)
    full_mask = shift_window_mask(grid[0] * window, grid[1] * window, window, shift)
    expected = reference_attention(*(t.flatten(1, 2) for t in (q, k, v)), bias + full_mask[:, None], 0.4, 0.0)

    def attend(region: torch.Tensor, mask) -> torch.Tensor:
        q, k, v = region.flatten(0, 2).chunk(3, dim=-1)
        out = attention(q, k, v, (bias if mask is None else bias + mask)[None], 0.4, 0.0, impl)
        return out.unflatten(0, region.shape[:3])

    out = over_seam_regions(torch.cat([q, k, v], dim=-1), build_seam_masks(window, shift), attend)
    assert max_diff(out.flatten(1, 2), expected) < 1e-5


@pytest.mark.parametrize('head_dim', [30, 24, 5])
def test_head_dim_padding_equals_unpadded(head_dim):
    """The CUDA path pads the head size to a multiple of 8 with zeros; the result must not change."""
    torch.manual_seed(0)
    q, k = torch.randn(2, 6, 16, head_dim), torch.randn(2, 6, 24, head_dim)
    v = torch.randn(2, 6, 24, head_dim, requires_grad=True)
    bias = torch.randn(1, 6, 16, 24, requires_grad=True)
    scale = head_dim**-0.5
    padded = sdpa_attention(q, k, v, bias, scale, 0.0, multiple=8)
    plain = sdpa_attention(q, k, v, bias, scale, 0.0, multiple=1)
    assert padded.shape == plain.shape == (2, 6, 16, head_dim)
    assert max_diff(padded, plain) < 1e-5 and max_diff(plain, reference_attention(q, k, v, bias, scale, 0.0)) < 1e-5
    grads = [torch.autograd.grad(out.square().sum(), (v, bias)) for out in (padded, plain)]
    assert all(max_diff(a, b) < 1e-4 for a, b in zip(*grads))


def parameter_grads(model: HAT, lq: torch.Tensor, seed: int = 123) -> dict:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    model(lq).square().mean().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_same_grads(first: dict, second: dict) -> None:
    for name, grad in first.items():
        assert torch.allclose(grad, second[name], atol=1e-6, rtol=1e-4), name


def test_training_gradients_equal_between_paths():
    torch.manual_seed(0)
    model = HAT(**{**fixture_options('hat_tiny_x4_w8'), 'drop_path_rate': 0.0}).train()
    lq = torch.rand(2, 3, 20, 20)
    fast = parameter_grads(model, lq)
    model.set_attn_impl('reference')
    assert_same_grads(fast, parameter_grads(model, lq))


def test_checkpointing_with_sdpa_gives_identical_gradients():
    torch.manual_seed(0)
    model = HAT(**{**fixture_options('hat_tiny_x4_w8'), 'drop_path_rate': 0.2}).train()
    lq = torch.rand(2, 3, 20, 20)
    plain = parameter_grads(model, lq)
    model.set_grad_checkpointing(True)
    assert_same_grads(plain, parameter_grads(model, lq))


@pytest.mark.parametrize('impl', ['sdpa', 'reference'])
def test_attention_dropout_acts_in_training_only(impl):
    torch.manual_seed(0)
    options = {**fixture_options('hat_tiny_x4_w8'), 'drop_path_rate': 0.0, 'attn_impl': impl}
    dropped = HAT(**options, attn_drop_rate=0.5)
    plain = HAT(**options)
    plain.load_state_dict(dropped.state_dict())
    lq = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(dropped.eval()(lq), plain.eval()(lq))
        dropped.train()
        # Identical weights give identical outputs to the last bit, so any difference is dropout.
        assert max_diff(dropped(lq), plain.train()(lq)) > 1e-5
        assert max_diff(dropped(lq), dropped(lq)) > 1e-5


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float().clamp(0, 1) - b.float().clamp(0, 1)).square().mean()
    return (10 * torch.log10(1 / mse)).item()


@pytest.mark.parametrize('name', ['hat_tiny_x4_w8', 'hat_tiny_x3_w16'])
def test_bf16_autocast_stays_within_50_db_of_fp32(name):
    photo = torch.from_numpy(data.astronaut()[100:148, 180:228].copy()).permute(2, 0, 1)[None].float() / 255
    model = fixture_model(name)
    with torch.no_grad():
        exact = model(photo)
        with autocast_context('cpu', bf16=True):
            fast = model(photo)
    assert fast.dtype == torch.float32 and psnr(fast, exact) >= 50


def photo_tensors(count: int, size: int) -> list:
    return [
        torch.from_numpy(crop[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        for crop in photo_crops(count, size, 11)
    ]


@pytest.mark.parametrize('name', ['hat_tiny_x4_w8', 'hat_tiny_x3_w16'])
def test_bf16_cast_inference_stays_within_50_db_of_fp32_and_leaves_the_network_alone(name):
    model = fixture_model(name)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    forward = bf16_inference(model, 'cpu', bf16=True)
    seen = []
    model.layers[0].residual_group.blocks[0].attn.qkv.register_forward_hook(
        lambda module, args, out: seen.append((args[0].dtype, module.weight.dtype, torch.is_autocast_enabled('cpu')))
    )
    with torch.inference_mode():
        for photo in photo_tensors(2, 32):
            fast = forward(photo)
            assert fast.dtype == torch.float32 and psnr(fast, model(photo)) >= 50
    # The cast path computes in bfloat16 without autocast; the plain call after it is float32 again.
    assert seen == [(torch.bfloat16, torch.bfloat16, False), (torch.float32, torch.float32, False)] * 2
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    assert {p.dtype for p in model.parameters()} == {torch.float32} and model.shift_seam_masks.dtype == torch.float32


def test_bf16_inference_is_the_plain_network_without_bf16_and_snapshots_the_weights():
    model = fixture_model('hat_tiny_x4_w8')
    assert bf16_inference(model, 'cpu', bf16=False) is model  # the fp32 path is the network itself
    lq = photo_tensors(1, 24)[0]
    forward = bf16_inference(model, 'cpu', bf16=True)
    with torch.inference_mode():
        before = forward(lq)
        model.conv_last.bias.add_(0.25)
        assert torch.equal(forward(lq), before)  # weights of the moment the function was made
        assert (bf16_inference(model, 'cpu', bf16=True)(lq) - before).mean() > 0.2


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA; CPU autocast is tested above')
def test_bf16_inference_on_cuda_runs_under_autocast():
    model = fixture_model('hat_tiny_x4_w8').cuda()
    photo = photo_tensors(1, 40)[0].cuda()
    with torch.inference_mode():
        fast = bf16_inference(model, 'cuda', bf16=True)(photo)
        assert fast.dtype == torch.float32 and psnr(fast, model(photo)) >= 50
    assert model.conv_first.weight.dtype == torch.float32


def test_float16_is_refused_with_advice():
    model = fixture_model('hat_tiny_x4_w8')
    lq = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match='float16.*bfloat16'), torch.autocast('cpu', dtype=torch.float16):
        model(lq)
    with pytest.raises(ValueError, match='float16.*bfloat16'):
        model.half()(lq.half())


def test_seam_masks_are_a_small_non_persistent_buffer():
    model = fixture_model('hat_tiny_x4_w8')
    masks = model.shift_seam_masks
    assert masks.shape == (3, 64, 64) and set(masks.unique().tolist()) == {0.0, -100.0}
    assert 'shift_seam_masks' not in model.state_dict()
    persistent = [k for k in model.state_dict() if k not in dict(model.named_parameters())]
    assert persistent == ['relative_position_index_SA', 'relative_position_index_OCA']
    assert HAT(**{**fixture_options('hat_tiny_x4_w8'), 'img_size': 8}).shift_seam_masks is None
    assert model.double().shift_seam_masks.dtype == torch.float64


@pytest.mark.parametrize('name', NAMES)
def test_state_dict_layout_is_independent_of_acceleration(name):
    release = torch.load(f'tests/fixtures/{name}.pth', weights_only=True)['params_ema']
    model = HAT(**fixture_options(name), attn_impl='reference')
    apply_acceleration(model, {'attn_impl': 'sdpa', 'use_checkpoint': True, 'channels_last': True})
    assert list(model.state_dict()) == list(release)


def test_acceleration_options_validate_and_defaults_change_nothing():
    with pytest.raises(ValueError, match='acceleration.fp16 is not an option'):
        AccelerationOptions.from_dict({'fp16': True})
    with pytest.raises(ValueError, match='attn_impl'):
        AccelerationOptions.from_dict({'attn_impl': 'flash'})
    with pytest.raises(ValueError, match='bf16'):
        AccelerationOptions.from_dict({'bf16': 'yes'})
    with pytest.raises(ValueError, match='acceleration.use_checkpoint'):
        AccelerationOptions(use_checkpoint='yes')
    assert AccelerationOptions.from_dict(None) == AccelerationOptions()
    model = fixture_model('hat_tiny_x4_w8', attn_impl='reference', use_checkpoint=True)
    assert apply_acceleration(model, {}) is model
    assert model.attn_impl == 'reference' and model.grad_checkpointing
    lq, expected = fixture_cases('hat_tiny_x4_w8')[0]
    apply_acceleration(model, {'attn_impl': 'sdpa', 'use_checkpoint': False, 'channels_last': True})
    assert model.attn_impl == 'sdpa' and not model.grad_checkpointing
    assert model.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert max_diff(model(lq), expected) < 1e-5


def test_autocast_context():
    with autocast_context('cpu', bf16=False):
        assert not torch.is_autocast_enabled('cpu')
    with autocast_context(torch.device('cpu'), bf16=True):
        assert torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.bfloat16


def test_compiled_inference_and_training_have_no_graph_breaks():
    """fullgraph=True fails on any graph break; the in-place compile keeps state-dict keys."""
    torch.manual_seed(0)
    model = HAT(**TINY).eval()
    keys = list(model.state_dict())
    lq = torch.rand(2, 3, 12, 16)
    with torch.no_grad():
        expected = model(lq)
    apply_acceleration(model, {'compile': {'backend': 'eager', 'fullgraph': True}})
    with torch.no_grad():
        assert max_diff(model(lq), expected) < 1e-5
    assert list(model.state_dict()) == keys
    model.train().set_grad_checkpointing(True)
    model(lq).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_compile_for_inference_reuses_one_graph_within_a_bucket():
    torch.manual_seed(0)
    model = HAT(**TINY).eval()
    counter = CompileCounter()
    run = compile_for_inference(model, bucket=16, dynamic=False, backend=counter, fullgraph=True)
    with torch.no_grad():
        for height, width in [(9, 13), (16, 16), (13, 10)]:
            lq = torch.rand(1, 3, height, width)
            out = run(lq)
            assert out.shape == (1, 3, 2 * height, 2 * width)
            if (height, width) == (16, 16):  # a full bucket is not padded: eager's output
                assert max_diff(out, model(lq)) < 1e-5
    assert counter.frame_count == 1
    with pytest.raises(ValueError, match='bucket'):
        compile_for_inference(model, bucket=6)


def test_compile_for_inference_default_bucket_gives_eager_outputs():
    torch.manual_seed(0)
    model = HAT(**TINY).eval()
    run = compile_for_inference(model, backend=CompileCounter())
    lq = torch.rand(2, 3, 9, 14)
    with torch.no_grad():
        assert max_diff(run(lq), model(lq)) < 1e-5

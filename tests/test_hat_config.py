"""HAT options read back from the weights alone (and from safetensors metadata when present)."""

import inspect
import json

import pytest
import torch
from safetensors.torch import save_file

from hat_basicsr import HAT
from hat_basicsr.archs.hat_config import (
    HAT_OPTIONS,
    METADATA_KEY,
    UNOBSERVABLE_DEFAULTS,
    checkpoint_options,
    infer_hat_options,
    overlap_window_size,
)
from hat_basicsr.cli.model_source import load_model
from hat_basicsr.errors import CheckpointError, HATArgumentError, SourceError
from hat_basicsr.utils.weights import read_state_dict

from reference_fixtures import NAMES, RELEASE_PARAMS, fixture_cases, fixture_options, fixture_weights_path

COMMON = {
    'window_size': 16,
    'overlap_ratio': 0.5,
    'mlp_ratio': 2,
    'upsampler': 'pixelshuffle',
    'resi_connection': '1conv',
    'in_chans': 3,
}
VARIANTS = {
    'HAT-S': {'embed_dim': 144, 'depths': [6] * 6, 'num_heads': [6] * 6, 'compress_ratio': 24, 'squeeze_factor': 24},
    'HAT': {'embed_dim': 180, 'depths': [6] * 6, 'num_heads': [6] * 6, 'compress_ratio': 3, 'squeeze_factor': 30},
    'HAT-L': {'embed_dim': 180, 'depths': [6] * 12, 'num_heads': [6] * 12, 'compress_ratio': 3, 'squeeze_factor': 30},
}


def meta_state_dict(**options):
    with torch.device('meta'):
        return HAT(**options).state_dict()


def assert_options_match(inferred, expected):
    differing = {key: (inferred.get(key), value) for key, value in expected.items() if inferred.get(key) != value}
    assert not differing, differing


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('variant', list(VARIANTS))
def test_release_variants_are_inferred_from_shapes(variant, scale):
    options = {**COMMON, **VARIANTS[variant], 'upscale': scale}
    state = meta_state_dict(**options)
    inferred = infer_hat_options(state)
    assert_options_match(inferred, options)
    assert inferred['type'] == 'HAT'
    with torch.device('meta'):
        rebuilt = HAT(**{key: value for key, value in inferred.items() if key != 'type'})
    assert sum(p.numel() for p in rebuilt.parameters()) == RELEASE_PARAMS[variant][scale - 2]


@pytest.mark.parametrize(
    'overrides',
    [
        {'in_chans': 1, 'resi_connection': 'identity', 'upscale': 1},
        {'num_heads': [2, 4], 'depths': [1, 3], 'overlap_ratio': 0.25, 'mlp_ratio': 4, 'upscale': 8},
        {'patch_norm': False, 'qkv_bias': False, 'compress_ratio': 5, 'squeeze_factor': 7},
        {'ape': True, 'img_size': 24},
    ],
    ids=['gray-identity-x1', 'heads-overlap-mlp-x8', 'no-norm-no-bias-odd-ratios', 'ape'],
)
def test_less_common_options_are_inferred(overrides):
    options = {
        'embed_dim': 16,
        'depths': [2],
        'num_heads': [2],
        'window_size': 8,
        'upscale': 2,
        'compress_ratio': 2,
        'squeeze_factor': 4,
        'upsampler': 'pixelshuffle',
        **overrides,
    }
    inferred = infer_hat_options(meta_state_dict(**options))
    expected = {**options}
    if overrides.get('squeeze_factor') == 7:  # 16 // 7 == 16 // 8: the largest equivalent is reported
        expected['squeeze_factor'] = 8
    assert_options_match(inferred, expected)


@pytest.mark.parametrize('name', NAMES)
def test_reference_fixtures_are_inferred(name):
    expected = fixture_options(name)
    inferred = infer_hat_options(read_state_dict(fixture_weights_path(name)))
    observable = {key: value for key, value in expected.items() if key not in UNOBSERVABLE_DEFAULTS}
    assert_options_match(inferred, observable)


def test_flat_spandrel_style_state_dict_without_buffers():
    state = {
        key: value
        for key, value in read_state_dict(fixture_weights_path('hat_tiny_x3_w16')).items()
        if not key.startswith('relative_position_index')
    }
    assert infer_hat_options(state)['upscale'] == 3


def test_state_dict_of_another_architecture_is_refused():
    from basicsr.archs.srvgg_arch import SRVGGNetCompact

    with pytest.raises(CheckpointError, match='not a HAT state dict: missing conv_first.weight'):
        infer_hat_options(SRVGGNetCompact(num_feat=8, num_conv=2).state_dict())


def test_safetensors_metadata_supplies_options_the_weights_cannot(tmp_path):
    """The gray fixture uses img_range 255 and conv_scale 0.02, which no tensor records."""
    name = 'hat_tiny_x2_gray_identity'
    state = read_state_dict(fixture_weights_path(name))
    bare = tmp_path / 'bare.safetensors'
    save_file(state, str(bare))
    assert checkpoint_options(bare, state)['img_range'] == 1.0
    with_options = tmp_path / 'with_options.safetensors'
    save_file(state, str(with_options), metadata={METADATA_KEY: json.dumps({'type': 'HAT', **fixture_options(name)})})
    assert checkpoint_options(with_options, state)['img_range'] == 255.0

    ((lq, expected),) = fixture_cases(name)[:1]
    wrong, _ = load_model(bare, 'cpu')
    right, scale = load_model(with_options, 'cpu')
    with torch.no_grad():
        assert (right(lq) - expected).abs().max() < 1e-5
        assert (wrong(lq) - expected).abs().max() > 1e-3
    assert scale == 2


def test_a_bad_option_in_safetensors_metadata_is_named_before_building(tmp_path):
    name = 'hat_tiny_x2_gray_identity'
    state = read_state_dict(fixture_weights_path(name))
    weights = tmp_path / 'bad.safetensors'
    metadata = {'type': 'HAT', **fixture_options(name), 'attn_impl': 'flash'}
    save_file(state, str(weights), metadata={METADATA_KEY: json.dumps(metadata)})
    with pytest.raises(SourceError) as error:
        load_model(weights, 'cpu')
    assert str(error.value) == (
        f"{weights}: {METADATA_KEY}.attn_impl: got 'flash', expected one of ['sdpa', 'reference']"
    )


@pytest.mark.parametrize('window_size, overlap_ratio', [(16, 0.5), (8, 0.25), (12, 0.34), (7, 0.0)])
def test_overlap_window_size_is_the_one_the_network_builds_and_the_weights_reveal(window_size, overlap_ratio):
    """M_o = (1 + gamma) M, gamma M truncated as in the release: the OCAB built, its index buffer,
    the complexity count and option inference all use the same size."""
    options = {
        **fixture_options('hat_tiny_x4_w8'),
        'window_size': window_size,
        'overlap_ratio': overlap_ratio,
        'img_size': 2 * window_size,
    }
    expected = window_size + int(overlap_ratio * window_size)
    assert overlap_window_size(window_size, overlap_ratio) == expected
    model = HAT(**options)
    assert model.layers[0].residual_group.overlap_attn.overlap_window_size == expected
    assert model.relative_position_index_OCA.shape == (window_size**2, expected**2)
    inferred = infer_hat_options(model.state_dict())
    assert overlap_window_size(window_size, inferred['overlap_ratio']) == expected


def test_a_refused_hat_argument_is_a_one_line_user_error():
    """Validation runs in hat_config, not in the arch's module: an argument HAT refuses is a
    UserError naming it, reported in one line (no traceback) wherever the network is built."""
    from hat_basicsr.utils.user_errors import user_error_message

    from basicsr.archs import build_network

    with pytest.raises(HATArgumentError) as error:
        build_network({'type': 'HAT', **fixture_options('hat_tiny_x4_w8'), 'window_size': 1})
    assert user_error_message(error.value) == (
        'HATArgumentError: HAT: invalid window_size: got 1, expected an integer >= 2'
    )
    with pytest.raises(HATArgumentError) as error:
        build_network({'type': 'HAT', **fixture_options('hat_tiny_x4_w8'), 'attn_impl': 'flash'})
    assert user_error_message(error.value).startswith("HATArgumentError: HAT: invalid attn_impl: got 'flash'")


def test_hat_options_declare_every_constructor_argument():
    """HAT_OPTIONS names the arguments of HAT's signature (norm_layer, a class, cannot come from
    YAML), and accepts each default but the release's empty upsampler, which builds no head."""
    parameters = inspect.signature(HAT).parameters
    assert HAT.OPTIONS is HAT_OPTIONS
    assert list(HAT_OPTIONS.names) == [name for name in parameters if name != 'norm_layer']
    refused_defaults = [name for name in HAT_OPTIONS.names if not HAT_OPTIONS[name].accepts(parameters[name].default)]
    assert refused_defaults == ['upsampler'] and parameters['upsampler'].default == ''
    assert all(option.doc for option in HAT_OPTIONS.options)
    assert 'beta' in HAT_OPTIONS['compress_ratio'].doc and 'gamma' in HAT_OPTIONS['overlap_ratio'].doc


@pytest.mark.parametrize(
    'overrides, argument',
    [
        (dict(embed_dim=25, num_heads=[3, 3]), 'embed_dim'),
        (dict(depths=[1], num_heads=[2, 2]), 'depths'),
        (dict(window_size=8, overlap_ratio=0.125), 'overlap_ratio'),
        (dict(upscale=6), 'upscale'),
        (dict(img_size=4), 'img_size'),
        (dict(embed_dim=8, num_heads=[2, 2], squeeze_factor=9), 'squeeze_factor'),
        (dict(window_size=1), 'window_size'),
        (dict(embed_dim=16.0), 'embed_dim'),
    ],
)
def test_check_arguments_names_the_argument_without_building(overrides, argument, monkeypatch):
    """The constructor's checks, run on an option file's partial arguments (the rest at their
    defaults) without building a layer."""
    monkeypatch.setattr(torch.nn.Conv2d, '__init__', lambda *args, **kwargs: pytest.fail('built a layer'))
    options = {**fixture_options('hat_tiny_x4_w8'), **overrides}
    with pytest.raises(HATArgumentError) as error:
        HAT.check_arguments(options)
    assert error.value.argument == argument and str(error.value).startswith(f'HAT: invalid {argument}: got ')
    HAT.check_arguments(fixture_options('hat_tiny_x4_w8'))

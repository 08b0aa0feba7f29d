"""ONNX deployment: `hat-basicsr export`, the exported graph in onnxruntime against the torch model
at sizes the export did not trace, and `upscale --backend onnxruntime` against the torch backend."""

import cv2
import numpy as np
import onnx
import pytest
import torch
from skimage import data

from hat_basicsr import HAT
from hat_basicsr.cli import export, upscale
from hat_basicsr.errors import OnnxError
from hat_basicsr.utils.image_io import read_image
from hat_basicsr.utils.onnx_deploy import METADATA_PREFIX, OPSET, OnnxModel, export_onnx

from helpers import TINY_HAT, run_command
from reference_fixtures import fixture_cases, fixture_model

# Two HABs (the second shifted, so the seam masks are in the graph) and an OCAB.
TINY = {**{key: value for key, value in TINY_HAT.items() if key != 'type'}, 'depths': [2], 'num_heads': [2]}
# (batch, height, width) never traced (the export traces batch 2 at 11x13): one pixel, one row,
# sizes below, at and above the window (4), odd, non-square, window multiples, batch 1 and 2.
UNSEEN_SHAPES = [(1, 1, 1), (1, 1, 5), (1, 5, 9), (1, 17, 23), (2, 16, 16), (1, 8, 24), (2, 7, 3), (1, 4, 4)]


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A tiny RGB HAT checkpoint and its ONNX file, written by the `export` subcommand."""
    root = tmp_path_factory.mktemp('onnx')
    torch.manual_seed(3)
    model = HAT(**TINY).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    torch.save({'params_ema': model.state_dict()}, root / 'tiny.pth')
    status = run_command(export.add_parser, ['export', str(root / 'tiny.pth'), str(root / 'tiny.onnx')])
    return {'root': root, 'model': model, 'checkpoint': root / 'tiny.pth', 'onnx': root / 'tiny.onnx', 'status': status}


def test_export_writes_one_dynamic_float32_file_with_its_metadata(exported):
    assert exported['status'] == 0
    proto = onnx.load(str(exported['onnx']))
    onnx.checker.check_model(proto)
    assert {entry.domain: entry.version for entry in proto.opset_import}[''] == OPSET
    (graph_input,), (_graph_output,) = proto.graph.input, proto.graph.output
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [bool(dim.dim_param) for dim in dims] == [True, False, True, True] and dims[1].dim_value == 3
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    assert metadata[METADATA_PREFIX + 'scale'] == '2' and metadata[METADATA_PREFIX + 'window_size'] == '4'
    runner = OnnxModel.load(exported['onnx'])
    assert (runner.scale, runner.in_chans, runner.window_size, runner.static_size) == (2, 3, 4, None)


@pytest.mark.parametrize('shape', UNSEEN_SHAPES, ids=lambda shape: 'x'.join(map(str, shape)))
def test_onnxruntime_equals_torch_at_sizes_not_traced(exported, shape):
    batch, height, width = shape
    lq = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(height * 100 + width))
    with torch.no_grad():
        expected = exported['model'](lq).numpy()
    session = OnnxModel.load(exported['onnx']).session
    out = session.run(None, {'input': lq.numpy()})[0]
    assert out.shape == (batch, 3, 2 * height, 2 * width)
    assert max_diff(out, expected) <= 1e-4


def test_release_fixture_reproduced_by_its_onnx_graph(tmp_path):
    """A 1-channel HAT with img_range 255 and identity residuals: the release's outputs, through ONNX."""
    name = 'hat_tiny_x2_gray_identity'
    path = tmp_path / f'{name}.onnx'
    assert export_onnx(fixture_model(name), path, scale=2) <= 1e-4
    runner = OnnxModel.load(path)
    for lq, expected in fixture_cases(name):  # batch 1 at 24x16 and batch 3 at 13x29
        assert max_diff(runner.run(lq.numpy()), expected.numpy()) <= 1e-4


def test_blocks_of_one_structure_are_traced_once_with_their_own_weights(tmp_path, monkeypatch):
    """Two residual groups: each block structure (HAB, shifted HAB, OCAB) is traced once, and each
    of the six blocks computes with its own weights (all perturbed, so no two are alike)."""
    torch.manual_seed(5)
    model = HAT(**{**TINY, 'depths': [2, 2], 'num_heads': [2, 2]}).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    traced = []
    trace = torch.onnx.export
    monkeypatch.setattr(
        torch.onnx, 'export', lambda module, *args, **kwargs: traced.append(module) or trace(module, *args, **kwargs)
    )
    path = tmp_path / 'two_groups.onnx'
    export_onnx(model, path, scale=2, verify_tolerance=None)
    assert len(traced) == 4 and traced[-1] is model  # three block structures, then the model once
    proto = onnx.load(str(path))
    assert not proto.functions and {entry.domain for entry in proto.opset_import} == {''}
    lq = torch.rand(2, 3, 9, 14, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert max_diff(OnnxModel.load(path)(lq), model(lq)) <= 1e-4


def test_static_export_fixes_height_and_width_and_says_so(tmp_path):
    model = HAT(**{key: value for key, value in TINY_HAT.items() if key != 'type'}).eval()  # one HAB: fast
    path = tmp_path / 'static.onnx'
    export_onnx(model, path, scale=2, static=(6, 10))
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [dim.dim_value for dim in dims[1:]] == [3, 6, 10] and dims[0].dim_param
    runner = OnnxModel.load(path)
    lq = torch.rand(2, 3, 6, 10)
    with torch.no_grad():
        assert max_diff(runner(lq), model(lq)) <= 1e-4
    with pytest.raises(OnnxError, match=r'static.onnx was exported for 6x10 inputs only, got 7x10'):
        runner(torch.rand(1, 3, 7, 10))


@pytest.mark.parametrize(
    'arguments, message',
    [
        (['--dtype', 'float16'], 'float16'),
        (['--static', '0', '8'], 'must be positive'),
    ],
)
def test_export_refusals_are_one_line_and_write_nothing(arguments, message, exported, tmp_path, capfd):
    target = tmp_path / 'refused.onnx'
    status = run_command(export.add_parser, ['export', str(exported['checkpoint']), str(target), *arguments])
    err = capfd.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and message in err[0] and not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_absolute_position_embedding_needs_a_static_export(tmp_path):
    model = HAT(**{**TINY, 'ape': True}).eval()
    with pytest.raises(OnnxError, match=r'ape=True .* --static 16 16'):
        export_onnx(model, tmp_path / 'ape.onnx', scale=2)
    assert not (tmp_path / 'ape.onnx').exists()


def test_a_model_without_what_the_exporter_asks_is_refused_by_name(tmp_path):
    model = torch.nn.Conv2d(3, 3, 3)
    model.window_size = 4
    with pytest.raises(
        OnnxError, match=r'^Conv2d cannot be exported: it lacks in_chans, repeated_blocks, check_export_size '
    ):
        export_onnx(model, tmp_path / 'conv.onnx', scale=1)
    assert list(tmp_path.iterdir()) == []


def test_export_does_not_overwrite_without_force(exported, capfd):
    before = exported['onnx'].read_bytes()
    status = run_command(export.add_parser, ['export', str(exported['checkpoint']), str(exported['onnx'])])
    assert status == 2 and 'exists' in capfd.readouterr().err and exported['onnx'].read_bytes() == before


@pytest.fixture(scope='module')
def images(exported):
    """A 16-bit RGB PNG, an RGBA PNG with a gradient alpha (upscaled by the model) and a gray PNG."""
    folder = exported['root'] / 'images'
    folder.mkdir()
    astronaut, chelsea, coffee = data.astronaut(), data.chelsea(), data.coffee()
    crop = lambda photo, top, left: np.ascontiguousarray(photo[top : top + 19, left : left + 26, ::-1])
    cv2.imwrite(str(folder / 'deep.png'), crop(astronaut, 40, 180).astype(np.uint16) * 257 + 3)
    alpha = np.tile(np.linspace(0, 255, 26, dtype=np.float32), (19, 1)).astype(np.uint8)
    cv2.imwrite(str(folder / 'cutout.png'), np.dstack([crop(chelsea, 60, 100), alpha]))
    cv2.imwrite(str(folder / 'gray.png'), cv2.cvtColor(crop(coffee, 100, 100), cv2.COLOR_BGR2GRAY))
    return folder


@pytest.mark.parametrize('tiles', [[], ['--tile', '8', '--tile-overlap', '4']], ids=['whole', 'tiled'])
def test_upscale_with_onnxruntime_equals_the_torch_backend(tiles, exported, images, tmp_path):
    outputs = {}
    for backend, model in (('torch', exported['checkpoint']), ('onnxruntime', exported['onnx'])):
        outputs[backend] = tmp_path / backend
        status = run_command(
            upscale.add_parser,
            [
                'upscale',
                str(images),
                '-o',
                str(outputs[backend]),
                '-m',
                str(model),
                '--device',
                'cpu',
                '--backend',
                backend,
                *tiles,
            ],
        )
        assert status == 0
    for name, channels, depth in (('deep.png', 3, 16), ('cutout.png', 3, 8), ('gray.png', 1, 8)):
        torch_image, torch_alpha, torch_depth = read_image(outputs['torch'] / name)
        image, alpha, bit_depth = read_image(outputs['onnxruntime'] / name)
        assert image.shape == (38, 52, channels) and bit_depth == torch_depth == depth
        assert max_diff(image, torch_image) <= 1 / (2**depth - 1) + 1e-6  # at most one rounding step
        assert (alpha is None) == (torch_alpha is None) == (name != 'cutout.png')
        if alpha is not None:
            assert alpha.std() > 0.05 and max_diff(alpha, torch_alpha) <= 1 / 255 + 1e-6


@pytest.mark.parametrize(
    'problem, message',
    [
        ('missing', 'ONNX model not found'),
        ('not-onnx', 'not a runnable ONNX model'),
        ('bf16', '--bf16 applies to the torch backend only'),
    ],
)
def test_onnxruntime_backend_refusals_are_one_line(problem, message, exported, images, tmp_path, capfd):
    (tmp_path / 'notes.onnx').write_text('not a model')  # a checkpoint is recognised: test_cli_upscale.py
    model = {'missing': tmp_path / 'absent.onnx', 'not-onnx': tmp_path / 'notes.onnx', 'bf16': exported['onnx']}[
        problem
    ]
    extra = ['--bf16'] if problem == 'bf16' else []
    status = run_command(
        upscale.add_parser,
        [
            'upscale',
            str(images / 'gray.png'),
            '-o',
            str(tmp_path / 'out'),
            '-m',
            str(model),
            '--backend',
            'onnxruntime',
            *extra,
        ],
    )
    err = capfd.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and message in err[0]

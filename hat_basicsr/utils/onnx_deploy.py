"""HAT as an ONNX file, and ONNX files as models: what `export` writes and `upscale --backend
onnxruntime` runs.

The exported graph takes float32 NCHW images in [0, 1] of any batch and any size >= 1 px (or one
fixed height and width with `static`); it pads to the window and crops back inside, as the torch
model does. The file records its scale, channels and window in its metadata (keys below), so
the runner needs nothing else; files from other tools are probed instead.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from hat_basicsr.errors import OnnxError
from hat_basicsr.utils.files import atomic_write

OPSET = 18
INPUT_NAME, OUTPUT_NAME = 'input', 'output'
METADATA_PREFIX = 'hat_basicsr.'
# Domain of the ONNX functions that carry the repeated blocks during an export (inlined before writing).
FUNCTION_DOMAIN = 'hat_basicsr'
# Default for an export's self-check against torch at a size the export did not trace.
VERIFY_TOLERANCE = 1e-3
CPU = torch.device('cpu')
# Model files of the torch backend (checkpoints, BasicSR option files), told apart from ONNX files.
TORCH_MODEL_SUFFIXES = ('.pth', '.pt', '.ckpt', '.safetensors', '.yml', '.yaml')


class Exportable(Protocol):
    """What export_onnx asks of a model (hat_basicsr.archs.hat_export answers it for HAT)."""

    in_chans: int
    # The graph pads inputs to a multiple of it; the traced and verified sizes are chosen from it.
    window_size: int

    def repeated_blocks(self) -> List[nn.Module]:
        """The blocks the model repeats; each structure among them is traced once, as an ONNX function."""

    def check_export_size(self, static: Optional[Tuple[int, int]]) -> None:
        """Raise OnnxError when the model cannot give a graph of that size (None: every size)."""


# The attributes and methods a model lacks are named when it is refused.
EXPORTABLE_MEMBERS = (
    *Exportable.__annotations__,
    *(name for name, value in vars(Exportable).items() if callable(value) and not name.startswith('_')),
)


def refuse_float16(dtype: str) -> None:
    """HAT's activations overflow float16 (see HAT._refuse_float16), in ONNX as in torch."""
    if dtype != 'float32':
        raise OnnxError(
            f"ONNX export in {dtype} is not supported: HAT's activations overflow float16, so an fp16 "
            'graph returns NaNs or black images; export float32 (and keep fp16 modes of runtimes such '
            'as TensorRT off)'
        )


def _sample_input(model: Exportable, static: Optional[Tuple[int, int]]) -> Tensor:
    """The example the exporter traces. Batch 2 and sizes that are neither 0, 1 nor equal to each
    other, so that torch.export keeps batch, height and width as independent symbols."""
    window = model.window_size
    height, width = static or (2 * window + 3, 3 * window + 1)
    return torch.rand(2, model.in_chans, height, width)


def _dynamic_sizes(static: Optional[Tuple[int, int]]) -> Dict[str, Dict[int, object]]:
    return {'x': {axis: torch.export.Dim.DYNAMIC for axis in ((0,) if static else (0, 2, 3))}}


@cache
def _function_call_op():
    """A torch op that stands for one call of an ONNX function in a traced graph:
    (tokens, function name, the block's parameters) -> tokens of the same shape."""

    @torch.library.custom_op('hat_basicsr::onnx_function_call', mutates_args=())
    def function_call(x: Tensor, function: str, params: List[Tensor]) -> Tensor:
        raise RuntimeError('hat_basicsr::onnx_function_call only exists in graphs traced for ONNX export')

    function_call.register_fake(lambda x, function, params: torch.empty_like(x))
    return function_call


def _translate_function_call(x, function: str, params: Sequence):
    """The ONNX node of a _function_call_op: the function `function` of FUNCTION_DOMAIN on x, then
    the parameters (one variadic input: the exporter gives a variadic input every argument)."""
    import onnx
    import onnxscript

    formal = onnx.defs.OpSchema.FormalParameter
    schema = onnx.defs.OpSchema(
        function,
        FUNCTION_DOMAIN,
        1,
        inputs=[formal('inputs', 'T', param_option=onnx.defs.OpSchema.FormalParameterOption.Variadic)],
        outputs=[formal('y', 'T')],
        type_constraints=[('T', ['tensor(float)'], 'float32 tensors')],
    )
    return onnxscript.values.Op(onnxscript.values.Opset(FUNCTION_DOMAIN, 1), function, schema)(x, *params)


class _FunctionCall(nn.Module):
    """Stands for a block while the model is traced: one call of the block's ONNX function.

    The block's own parameters are passed to the call, so blocks of one structure share one
    function; its other arguments (position indices, seam masks) are the model's constants, built
    into the function."""

    def __init__(self, block: nn.Module, function: str):
        super().__init__()
        self.block = block
        self.function = function

    def forward(self, x: Tensor, x_size: Tuple[int, int], *constants: Optional[Tensor]) -> Tensor:
        grid = x.unflatten(1, x_size)
        return _function_call_op()(grid, self.function, list(self.block.parameters())).flatten(1, 2)


class _BlockOnGrid(nn.Module):
    """A block as a function of (B, H, W, C) tokens and its parameters, to trace it once for all
    the blocks of its structure."""

    def __init__(self, block: nn.Module, constants: Tuple[Optional[Tensor], ...]):
        super().__init__()
        self.block = block
        self.constants = constants
        self.names = [name for name, _ in block.named_parameters()]

    def forward(self, x: Tensor, params: List[Tensor]) -> Tensor:
        size = tuple(x.shape[1:3])
        out = torch.func.functional_call(
            self.block, dict(zip(self.names, params)), (x.flatten(1, 2), size, *self.constants)
        )
        return out.unflatten(1, size)


def _structure(module: nn.Module) -> Tuple:
    """What two blocks must share to share a function: class, plain attributes and parameter shapes
    of every submodule. Dropout rates are left out (HAT's drop-path rate grows block by block):
    the export runs in eval mode, where dropouts are identities."""
    from torchvision.ops import StochasticDepth

    plain = (bool, int, float, str, type(None))
    dropouts = (nn.modules.dropout._DropoutNd, StochasticDepth)
    return tuple(
        (
            name,
            type(sub).__name__,
            ()
            if isinstance(sub, dropouts)
            else tuple(sorted((key, value) for key, value in vars(sub).items() if isinstance(value, plain))),
            tuple((key, tuple(param.shape)) for key, param in sub.named_parameters(recurse=False)),
        )
        for name, sub in module.named_modules()
    )


@contextmanager
def _blocks_replaced(model: nn.Module, replacements: Dict[nn.Module, nn.Module]) -> Iterator[None]:
    """`model` with each block of `replacements` swapped for its replacement, where it sits."""
    slots = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if child in replacements
    ]
    for parent, name, child in slots:
        setattr(parent, name, replacements[child])
    try:
        yield
    finally:
        for parent, name, child in slots:
            setattr(parent, name, child)


def _block_arguments(model: nn.Module, blocks: List[nn.Module]) -> Dict[nn.Module, Tuple]:
    """The arguments each block is called with in one window-sized forward: (tokens, size, then
    the model's size-free constants)."""
    arguments = {}

    def record(block: nn.Module, args: Tuple) -> None:
        arguments.setdefault(block, args)

    hooks = [block.register_forward_pre_hook(record) for block in blocks]
    try:
        with torch.no_grad():
            model(torch.zeros(1, model.in_chans, model.window_size, model.window_size))
    finally:
        for hook in hooks:
            hook.remove()
    return arguments


def _block_function(block: nn.Module, arguments: Tuple, name: str, window: int):
    """The FunctionProto `name` of `block` traced once on a grid of whole windows (sizes symbolic
    in windows, which keeps torch.export's size arithmetic short), parameters as inputs."""
    import onnx

    tokens, _size, *constants = arguments
    rows, cols = torch.export.Dim(f'{name}_rows', min=1), torch.export.Dim(f'{name}_cols', min=1)
    params = [param.detach() for param in block.parameters()]
    proto = torch.onnx.export(
        _BlockOnGrid(block, tuple(constants)),
        (torch.rand(2, 2 * window, 3 * window, tokens.shape[-1]), params),
        dynamo=True,
        dynamic_shapes={
            'x': {0: torch.export.Dim.DYNAMIC, 1: window * rows, 2: window * cols},
            'params': [None] * len(params),
        },
        opset_version=OPSET,
        verbose=False,
    ).model_proto
    graph = proto.graph
    nodes = [onnx.helper.make_node('Constant', [], [tensor.name], value=tensor) for tensor in graph.initializer]
    function = onnx.helper.make_function(
        FUNCTION_DOMAIN,
        name,
        [value.name for value in graph.input],
        [value.name for value in graph.output],
        nodes + list(graph.node),
        list(proto.opset_import),
    )
    return function, list(proto.functions)


def _export_proto(model: Exportable, sample: Tensor, static: Optional[Tuple[int, int]]):
    """The ModelProto of `model` traced on `sample` by torch.export (torch's recommended exporter).

    Each structure of repeated block (HAT-S: a HAB, a shifted HAB, an OCAB, 42 blocks in all) is
    traced once into an ONNX function, and the model is traced with its blocks standing for calls
    of those; the functions are then inlined, so the file is one plain graph. Tracing every block
    symbolically took most of an export's time.

    The TorchScript-based exporter is not offered: it traces sizes as constants or fails on them
    (OCAB's unfold, the padding arithmetic), so it cannot give a graph for every size.
    """
    import onnx.inliner

    blocks = model.repeated_blocks()
    arguments = _block_arguments(model, blocks)
    functions, names, standins = {}, {}, {}
    for block in blocks:
        key = _structure(block)
        if key not in names:
            names[key] = f'{type(block).__name__}_{len(names)}'
            functions[names[key]] = _block_function(block, arguments[block], names[key], model.window_size)
        standins[block] = _FunctionCall(block, names[key])
    # The exporter warns that it cannot infer an ONNX signature for _translate_function_call and
    # will send it every call of the op, which is what it is for.
    registration_log = logging.getLogger('torch.onnx._internal.exporter._registration')
    level = registration_log.level
    registration_log.setLevel(logging.ERROR)
    try:
        with _blocks_replaced(model, standins):
            proto = torch.onnx.export(
                model,
                (sample,),
                dynamo=True,
                dynamic_shapes=_dynamic_sizes(static),
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                custom_translation_table={_function_call_op()._opoverload: _translate_function_call},
                verbose=False,
            ).model_proto
    finally:
        registration_log.setLevel(level)
    known = {(function.domain, function.name) for function in proto.functions}
    for function, inner in functions.values():
        for extra in (function, *inner):
            if (extra.domain, extra.name) not in known:
                proto.functions.append(extra)
                known.add((extra.domain, extra.name))
    if FUNCTION_DOMAIN not in {entry.domain for entry in proto.opset_import}:
        proto.opset_import.append(onnx.helper.make_opsetid(FUNCTION_DOMAIN, 1))
    proto = onnx.inliner.inline_local_functions(proto)
    kept = [entry for entry in proto.opset_import if entry.domain != FUNCTION_DOMAIN]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    return proto


def export_onnx(
    model: Exportable,
    path: Union[str, os.PathLike],
    scale: int,
    static: Optional[Tuple[int, int]] = None,
    verify_tolerance: Optional[float] = VERIFY_TOLERANCE,
) -> float:
    """Write `model` (a HAT, or any other Exportable) as a float32 ONNX file at `path`, atomically;
    the model ends up in float32 on the CPU in eval mode.

    With `verify_tolerance` the graph is run in onnxruntime against the torch model at a size the
    export did not trace, and refused (nothing written) beyond the tolerance. Returns the maximum
    absolute difference of that check (0.0 when not verified).
    """
    import onnx

    lacking = [name for name in EXPORTABLE_MEMBERS if not hasattr(model, name)]
    if lacking:
        raise OnnxError(
            f'{type(model).__name__} cannot be exported: it lacks {", ".join(lacking)} '
            '(what the exporter asks of a model: hat_basicsr.utils.onnx_deploy.Exportable; HAT provides it)'
        )
    if static and min(static) < 1:
        raise OnnxError(f'static size {static} must be positive')
    model.check_export_size(static)
    model = model.float().cpu().eval()
    proto = _export_proto(model, _sample_input(model, static), static)
    metadata = {
        'scale': scale,
        'in_chans': model.in_chans,
        'window_size': model.window_size,
        'static_size': f'{static[0]}x{static[1]}' if static else 'dynamic',
    }
    onnx.helper.set_model_props(proto, {METADATA_PREFIX + key: str(value) for key, value in metadata.items()})
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    diff = 0.0
    if verify_tolerance is not None:
        diff = verify(model, OnnxModel.from_bytes(data, str(path)), static)
        if not diff <= verify_tolerance:
            raise OnnxError(
                f'the exported graph differs from the torch model by {diff:.3g} (> {verify_tolerance}); '
                f'{path} was not written'
            )
    atomic_write(path, lambda stream: stream.write(data))
    return diff


def verify(model: nn.Module, runner: 'OnnxModel', static: Optional[Tuple[int, int]]) -> float:
    """Max abs difference of the ONNX graph and the torch model at a batch and size not traced."""
    window = model.window_size
    height, width = static or (window + 1, 2 * window + 3)
    lq = torch.rand(1, model.in_chans, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(lq)
    return (runner(lq) - expected).abs().max().item()


def providers_for(device: torch.device, cpu_fallback: bool = False) -> List:
    """onnxruntime execution providers for a torch device; CUDA only where onnxruntime has it, else
    the CPU with `cpu_fallback` (a device picked automatically) or an OnnxError."""
    import onnxruntime

    if device.type == 'cuda' and 'CUDAExecutionProvider' in onnxruntime.get_available_providers():
        return [('CUDAExecutionProvider', {'device_id': device.index or 0}), 'CPUExecutionProvider']
    if device.type == 'cpu' or cpu_fallback:
        return ['CPUExecutionProvider']
    raise OnnxError(
        f'onnxruntime here has no provider for device {device} (available: '
        f'{", ".join(onnxruntime.get_available_providers())}); use --device cpu'
    )


def runtime_errors() -> Tuple[type, ...]:
    """onnxruntime's exceptions for files and inputs it cannot handle (they derive from Exception only)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return (
        state.Fail,
        state.InvalidArgument,
        state.InvalidGraph,
        state.InvalidProtobuf,
        state.NoSuchFile,
        state.NotImplemented,
        state.RuntimeException,
    )


def is_torch_model_file(path: Path) -> bool:
    """Whether `path` is what the torch backend reads: by its suffix, or by its first bytes (torch.save's
    zip, a legacy pickle, or safetensors: an 8-byte header length then a JSON object)."""
    if path.suffix.lower() in TORCH_MODEL_SUFFIXES:
        return True
    with open(path, 'rb') as stream:
        head = stream.read(9)
    return head.startswith((b'PK\x03\x04', b'\x80')) or (len(head) == 9 and head[8:] == b'{')


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class OnnxModel:
    """An ONNX super-resolution graph called like the torch model: (B, C, H, W) tensor -> tensor.

    Attributes `scale`, `in_chans`, `window_size` (None when unknown) and `static_size` come from
    the file's metadata when it is ours; other files are probed once at their smallest accepted
    size.
    """

    def __init__(self, session, name: str):
        self.session = session
        self.name = name
        (graph_input,), outputs = session.get_inputs(), session.get_outputs()
        if len(graph_input.shape) != 4 or len(outputs) != 1:
            raise OnnxError(
                f'{name}: expected one NCHW input and one output, got inputs '
                f'{graph_input.shape} and {len(outputs)} outputs'
            )
        if graph_input.type not in ('tensor(float)', 'tensor(float16)'):
            raise OnnxError(f'{name}: input type {graph_input.type} is not supported (float or float16)')
        self.input_name = graph_input.name
        self.input_dtype = np.float16 if graph_input.type == 'tensor(float16)' else np.float32
        dims = [dim if isinstance(dim, int) else None for dim in graph_input.shape]
        self.static_size = (dims[2], dims[3]) if None not in dims[2:] else None
        metadata = {
            key[len(METADATA_PREFIX) :]: value
            for key, value in session.get_modelmeta().custom_metadata_map.items()
            if key.startswith(METADATA_PREFIX)
        }
        self.in_chans = int(metadata['in_chans']) if 'in_chans' in metadata else dims[1]
        self.window_size = int(metadata['window_size']) if 'window_size' in metadata else None
        if self.in_chans is None:
            raise OnnxError(f'{name}: the input channel count is not fixed in the graph')
        self.scale = int(metadata['scale']) if 'scale' in metadata else self._probe_scale()

    @classmethod
    def load(cls, path: Union[str, os.PathLike], device: torch.device = CPU, cpu_fallback: bool = False) -> 'OnnxModel':
        """The file in an onnxruntime session for `device` (see providers_for)."""
        import onnxruntime

        path = Path(path)
        if not path.is_file():
            raise OnnxError(f'ONNX model not found: {path}')
        try:
            session = onnxruntime.InferenceSession(str(path), providers=providers_for(device, cpu_fallback))
        except runtime_errors() as error:
            if is_torch_model_file(path):
                raise OnnxError(
                    f'{path} is a PyTorch checkpoint or option file, not an ONNX model: drop --backend '
                    'onnxruntime to run it with torch, or make an .onnx file with `hat-basicsr export`'
                ) from error
            raise OnnxError(f'{path}: not a runnable ONNX model ({first_line(error)})') from error
        return cls(session, str(path))

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> 'OnnxModel':
        import onnxruntime

        return cls(onnxruntime.InferenceSession(data, providers=['CPUExecutionProvider']), name)

    def _probe_scale(self) -> int:
        height, width = self.static_size or (16, 16)
        out = self.run(np.zeros((1, self.in_chans, height, width), dtype=self.input_dtype))
        if out.shape[2] % height or out.shape[2] // height != out.shape[3] / width:
            raise OnnxError(f'{self.name}: output {out.shape} for a {height}x{width} input is no integer upscale')
        return out.shape[2] // height

    def run(self, array: np.ndarray) -> np.ndarray:
        if self.static_size and tuple(array.shape[2:]) != self.static_size:
            raise OnnxError(
                f'{self.name} was exported for {self.static_size[0]}x{self.static_size[1]} inputs only, '
                f'got {array.shape[2]}x{array.shape[3]} (export without --static to serve every size)'
            )
        try:
            return self.session.run(None, {self.input_name: np.ascontiguousarray(array, dtype=self.input_dtype)})[0]
        except runtime_errors() as error:
            raise RuntimeError(f'onnxruntime failed on a {tuple(array.shape)} input: {first_line(error)}') from error

    def __call__(self, x: Tensor) -> Tensor:
        out = self.run(x.detach().float().cpu().numpy())
        return torch.from_numpy(out.astype(np.float32, copy=False)).to(x.device)

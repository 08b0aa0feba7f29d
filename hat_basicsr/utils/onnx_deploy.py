"""HAT as an ONNX file, and ONNX files as models: what `export` writes and `upscale --backend
onnxruntime` runs.

The exported graph takes float32 NCHW images in [0, 1] of any batch and any size >= 1 px (or one
fixed height and width with `static`); it pads to the window and crops back inside, as the torch
model does. The file records its scale, channels and window in its metadata (keys below), so
the runner needs nothing else; files from other tools are probed instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from hat_basicsr.errors import OnnxError
from hat_basicsr.utils.files import atomic_write

OPSET = 18
INPUT_NAME, OUTPUT_NAME = 'input', 'output'
METADATA_PREFIX = 'hat_basicsr.'
# Default for an export's self-check against torch at a size the export did not trace.
VERIFY_TOLERANCE = 1e-3
CPU = torch.device('cpu')
# Model files of the torch backend (checkpoints, BasicSR option files), told apart from ONNX files.
TORCH_MODEL_SUFFIXES = ('.pth', '.pt', '.ckpt', '.safetensors', '.yml', '.yaml')


def refuse_float16(dtype: str) -> None:
    """HAT's activations overflow float16 (see HAT._refuse_float16), in ONNX as in torch."""
    if dtype != 'float32':
        raise OnnxError(
            f"ONNX export in {dtype} is not supported: HAT's activations overflow float16, so an fp16 "
            'graph returns NaNs or black images; export float32 (and keep fp16 modes of runtimes such '
            'as TensorRT off)'
        )


def _sample_input(model: nn.Module, static: Optional[Tuple[int, int]]) -> Tensor:
    """The example the exporter traces. Batch 2 and sizes that are neither 0, 1 nor equal to each
    other, so that torch.export keeps batch, height and width as independent symbols."""
    window = model.window_size
    height, width = static or (2 * window + 3, 3 * window + 1)
    return torch.rand(2, model.in_chans, height, width)


def _export_proto(model: nn.Module, sample: Tensor, static: Optional[Tuple[int, int]]):
    """The ModelProto of `model` traced on `sample` by torch.export (torch's recommended exporter).

    The TorchScript-based exporter is not offered: it traces sizes as constants or fails on them
    (OCAB's unfold, the padding arithmetic), so it cannot give a graph for every size.
    """
    dynamic_shapes = {'x': {axis: torch.export.Dim.DYNAMIC for axis in ((0,) if static else (0, 2, 3))}}
    return torch.onnx.export(
        model,
        (sample,),
        dynamo=True,
        dynamic_shapes=dynamic_shapes,
        opset_version=OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        verbose=False,
    ).model_proto


def export_onnx(
    model: nn.Module,
    path: Union[str, os.PathLike],
    scale: int,
    static: Optional[Tuple[int, int]] = None,
    verify_tolerance: Optional[float] = VERIFY_TOLERANCE,
) -> float:
    """Write `model` (a HAT) as a float32 ONNX file at `path`, atomically; the model ends up in
    float32 on the CPU in eval mode.

    With `verify_tolerance` the graph is run in onnxruntime against the torch model at a size the
    export did not trace, and refused (nothing written) beyond the tolerance. Returns the maximum
    absolute difference of that check (0.0 when not verified).
    """
    import onnx

    if not hasattr(model, 'window_size') or not hasattr(model, 'in_chans'):
        raise OnnxError(f'{type(model).__name__} is not a HAT: only HAT models are exported')
    if static and min(static) < 1:
        raise OnnxError(f'static size {static} must be positive')
    if getattr(model, 'ape', False) and tuple(static or ()) != tuple(model.patches_resolution):
        raise OnnxError(
            'a HAT with ape=True (absolute position embedding) only accepts its img_size '
            f'{tuple(model.patches_resolution)}: export it with --static '
            f'{model.patches_resolution[0]} {model.patches_resolution[1]}'
        )
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

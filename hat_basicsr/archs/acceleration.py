"""Speed and memory switches for HAT, in one place for HATModel, scripts and benchmarks.

Options (an `acceleration` dict of the option file; every key optional):

- `attn_impl`: 'sdpa' (fused attention, the network's default) or 'reference' (the release's
  arithmetic). Unset keeps what the network was built with.
- `use_checkpoint`: gradient checkpointing of every HAB/OCAB. Unset keeps the network's setting.
- `bf16`: run forward passes under bfloat16 autocast (see hat_basicsr.utils.autocast); weights, gradients
  and optimizer state stay float32. float16 is not offered: HAT refuses it.
- `channels_last`: convolution weights in channels-last layout, the layout HAT's token tensors
  already have when they reach a convolution.
- `compile`: False, True, or a dict of `nn.Module.compile` arguments. The network is compiled in
  place, so state-dict keys, EMA updates and checkpoints are unchanged (no `_orig_mod.` prefix).

`compile_for_inference` adds input-size bucketing for inference on images of many sizes;
`bf16_inference` is bf16 inference without autocast on CPU (see there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Union

import torch
from torch import Tensor, nn
from torch.func import functional_call

from hat_basicsr.archs.attention import ATTN_IMPLS
from hat_basicsr.archs.hat_arch import pad_to_multiple
from hat_basicsr.errors import OptionFileError
from hat_basicsr.utils.autocast import autocast_context
from hat_basicsr.utils.option_spec import Option, Section, refuse_problem


@dataclass(frozen=True)
class AccelerationOptions:
    """Validated acceleration options; None means 'keep what the network was built with'."""

    attn_impl: Optional[str] = None
    use_checkpoint: Optional[bool] = None
    bf16: bool = False
    channels_last: bool = False
    compile: Union[bool, Dict[str, Any]] = False

    OPTIONS: ClassVar[Section] = Section(
        (
            Option(
                'attn_impl',
                ('string', 'null'),
                "Attention kernel: 'sdpa' (fused) or 'reference' (the release's arithmetic).",
                choices=(None, *ATTN_IMPLS),
                expected_text=f"one of {list(ATTN_IMPLS)}, or ~ to keep the network's",
            ),
            Option(
                'use_checkpoint',
                ('boolean', 'null'),
                "Gradient checkpointing of every HAB/OCAB; ~ keeps the network's.",
            ),
            Option('bf16', 'boolean', 'Forward passes under bfloat16 autocast; weights stay float32.'),
            Option('channels_last', 'boolean', 'Convolution weights in channels-last layout.'),
            Option(
                'compile',
                ('boolean', 'mapping'),
                'Compile the network in place: true, or a mapping of nn.Module.compile arguments.',
                expected_text='true, false or a mapping of torch.compile arguments',
            ),
        ),
        doc='Speed and memory switches for HAT (every key optional).',
    )

    def __post_init__(self) -> None:
        refuse_problem(vars(self), self.OPTIONS, 'acceleration', 'acceleration')

    @classmethod
    def from_dict(cls, opt: Optional[Mapping[str, Any]]) -> 'AccelerationOptions':
        """Options from an option-file section (None or {} gives the defaults); OptionFileError
        naming the entry for an unknown key or a refused value."""
        if opt is not None and not isinstance(opt, Mapping):
            raise OptionFileError(f'acceleration: got {opt!r}, expected a mapping of acceleration options')
        opt = dict(opt or {})
        refuse_problem(opt, cls.OPTIONS, 'acceleration', 'acceleration')
        return cls(**opt)


def apply_acceleration(net: nn.Module, opt: Union[AccelerationOptions, Mapping[str, Any], None]) -> nn.Module:
    """Apply attn_impl, use_checkpoint, channels_last and compile to `net` in place and return it.

    Defaults change nothing, so a network built from a release option file computes what the
    release computes. Call it before wrapping the network in DDP; bf16 is applied per forward by
    hat_basicsr.utils.autocast.autocast_context.
    """
    opt = opt if isinstance(opt, AccelerationOptions) else AccelerationOptions.from_dict(opt)
    for option, method in (('attn_impl', 'set_attn_impl'), ('use_checkpoint', 'set_grad_checkpointing')):
        value = getattr(opt, option)
        if value is None:
            continue
        if not hasattr(net, method):
            raise ValueError(f'acceleration.{option} applies to HAT; {type(net).__name__} has no {method}()')
        getattr(net, method)(value)
    if opt.channels_last:
        net.to(memory_format=torch.channels_last)
    if opt.compile:
        net.compile(**(opt.compile if isinstance(opt.compile, dict) else {}))
    return net


def compile_for_inference(
    net: nn.Module, bucket: Optional[int] = None, dynamic: Optional[bool] = None, **compile_kwargs: Any
) -> Callable[[Tensor], Tensor]:
    """A compiled inference function that does not recompile for every new image size.

    Inputs are reflect-padded to a multiple of `bucket` before the compiled network and the output
    is cropped back, so all sizes in a bucket share one graph. The default bucket is the window,
    which the network pads to anyway: outputs equal the eager network's, and with `dynamic=None`
    torch switches to one graph with symbolic sizes at the second size it sees. `dynamic=False`
    with a coarser bucket (e.g. 64) gives static graphs, one per bucket, at the price of outputs
    that differ slightly from eager near the borders (more reflected padding).
    """
    window = net.window_size
    bucket = bucket or window
    if bucket % window:
        raise ValueError(f'compile_for_inference: bucket {bucket} must be a multiple of window_size {window}')
    compiled = torch.compile(net, dynamic=dynamic, **compile_kwargs)

    def run(x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        out = compiled(pad_to_multiple(x, bucket))
        return out[..., : height * net.upscale, : width * net.upscale]

    return run


def bf16_inference(net: nn.Module, device: Union[torch.device, str], bf16: bool) -> Callable[[Tensor], Tensor]:
    """Inference through `net` on `device`, in bfloat16 when `bf16`, returning float32.

    On CPU the weights are cast to bfloat16 once, here, and the whole forward runs in bfloat16:
    autocast would cast activations back and forth around every op it keeps in float32 (layer
    norms, softmax, GELU, the residual additions; about 1,400 conversions per HAT forward). The
    float32 arithmetic stays where it matters inside the kernels: layer norm statistics, the fused
    attention's softmax and the matmul accumulators are float32 for bfloat16 inputs on CPU. The
    cast weights are a separate set of tensors passed with `torch.func.functional_call`: `net`,
    its parameters, state dict and dtype stay as they were, and the function sees the weights of
    the moment it was made (make a new one after training steps). On CUDA, where autocast's
    conversions are cheap next to the kernels, the forward runs under bfloat16 autocast.
    """
    if not bf16:
        return net
    if torch.device(device).type != 'cpu':

        def autocast_forward(x: Tensor) -> Tensor:
            with autocast_context(device, True):
                return net(x).float()

        return autocast_forward
    tensors = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    weights = {name: t.to(torch.bfloat16) if t.is_floating_point() else t for name, t in tensors.items()}

    def bf16_forward(x: Tensor) -> Tensor:
        return functional_call(net, weights, (x.to(torch.bfloat16),), tie_weights=False).float()

    return bf16_forward

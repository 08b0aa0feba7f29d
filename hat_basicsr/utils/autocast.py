"""bfloat16 autocast as one switch, for the models, the CLI and the benchmarks."""

from __future__ import annotations

import contextlib
from typing import ContextManager, Union

import torch


def autocast_context(device: Union[torch.device, str], bf16: bool) -> ContextManager:
    """bfloat16 autocast on `device` when `bf16`, else a no-op: wrap forward passes and losses
    (not `backward()` or the optimizer step)."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)

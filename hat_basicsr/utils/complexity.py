"""Parameters and multiply-adds (MACs) of a network at a given input size.

The report types, and the count of any network measured with torch's FlopCounterMode on the meta
device (no memory, no arithmetic): multiply-adds of convolutions, linear layers and matrix
products. HAT is counted analytically from its options instead (hat_basicsr.archs.hat_complexity),
with the same operation classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class Row:
    name: str
    params: int
    macs: int


@dataclass
class Complexity:
    size: Tuple[int, int]  # input height, width
    processed_size: Tuple[int, int]  # after the network's own padding
    rows: List[Row] = field(default_factory=list)
    params: int = 0

    @property
    def macs(self) -> int:
        return sum(row.macs for row in self.rows)


def count_parameters(model: nn.Module, prefixes: Sequence[str] = ('',)) -> int:
    """Parameters whose names start with any of `prefixes` (buffers are not parameters)."""
    return sum(p.numel() for name, p in model.named_parameters() if name.startswith(tuple(prefixes)))


def measured_complexity(model: nn.Module, in_chans: int, size: Tuple[int, int]) -> Complexity:
    """MACs counted by FlopCounterMode while `model` runs on a (1, in_chans, *size) input on its own
    device (use the meta device for a free count), broken down by the model's top-level children."""
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device('cpu')
    counter = FlopCounterMode(display=False, depth=None)
    with counter, torch.no_grad():
        model(torch.zeros(1, in_chans, *size, device=device))
    counts: Dict[str, Dict] = counter.get_flop_counts()
    root = type(model).__name__
    report = Complexity(size=tuple(size), processed_size=tuple(size), params=count_parameters(model))
    for name, _ in model.named_children():
        flops = sum(counts.get(f'{root}.{name}', {}).values())
        report.rows.append(Row(name, count_parameters(model, [f'{name}.']), flops // 2))
    counted = sum(row.macs for row in report.rows)
    report.rows.append(Row('(outside children)', 0, sum(counts.get(root, {}).values()) // 2 - counted))
    return report

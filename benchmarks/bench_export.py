#!/usr/bin/env python
"""Time of `export_onnx` (dynamic batch/height/width, verified in onnxruntime, as `hat-basicsr
export` does) against one forward pass of the same model on a 64x64 input, measured in one run.

The figure is their ratio: the export in forward passes. Forward passes and exports alternate
(forward, export, forward, export, ...), so load from other processes hits both alike; each
export is divided by the median of the forwards around it. The model is randomly initialised
(speed does not depend on the weights). It rewrites the section `onnx-export-<variant>` of
benchmarks/RESULTS.md and keeps the others.

    python benchmarks/bench_export.py --variant HAT-S --reps 2
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import onnx
import onnxruntime
import onnxscript
import torch
from bench_hat import COMMON, RESULTS, VARIANTS, machine_description, write_results

from hat_basicsr import HAT
from hat_basicsr.utils.onnx_deploy import OPSET, export_onnx


def forward_seconds(model: HAT, lq: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model(lq)
    return time.perf_counter() - start


def export_seconds(model: HAT, folder: Path) -> float:
    start = time.perf_counter()
    export_onnx(model, folder / 'model.onnx', scale=COMMON['upscale'])
    return time.perf_counter() - start


def bench(args: argparse.Namespace) -> List[Tuple[float, float, float]]:
    """(forward seconds, export seconds, load average at the export's start) of each export."""
    model = HAT(**COMMON, **VARIANTS[args.variant]).eval()
    lq = torch.rand(1, 3, 64, 64)
    forward_seconds(model, lq)  # warm-up
    forwards, runs = [forward_seconds(model, lq)], []
    with tempfile.TemporaryDirectory() as folder:
        for rep in range(args.reps):
            load = os.getloadavg()[0]
            export = export_seconds(model, Path(folder))
            forwards.append(forward_seconds(model, lq))
            runs.append((statistics.median(forwards[-2:]), export, load))
            print(f'export {rep + 1}: {export:.1f} s = {export / runs[-1][0]:.0f} forward passes (load {load:.1f})')
    return runs


def section(args: argparse.Namespace, runs: List[Tuple[float, float, float]]) -> str:
    ratios = [export / forward for forward, export, _load in runs]
    lines = [
        f'## ONNX export time, {args.variant}',
        '',
        f'- machine: {machine_description(torch.device("cpu"))}',
        f'- torch {torch.__version__}, onnx {onnx.__version__}, onnxscript {onnxscript.__version__}, '
        f'onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}, '
        f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC',
        f'- command: `python benchmarks/bench_export.py {" ".join(sys.argv[1:])}`',
        f'- export: `export_onnx` (opset {OPSET}, fp32, dynamic batch/height/width, verified in onnxruntime '
        'at an untraced size); forward: torch eager fast-fp32, x4, 1x3x64x64; forwards and exports '
        'alternate, each export divided by the median of the forwards before and after it',
        f'- load average at the end: {os.getloadavg()[0]:.1f} (other processes share this machine)',
        f'- export / forward: **{ratios[0]:.0f} forward passes** for the first export of the process (it '
        'includes importing and warming up torch.onnx and onnxscript, as every `hat-basicsr export` does), '
        f'median {statistics.median(ratios):.0f}',
        '',
        '| run | forward (s) | export (s) | export / forward | load average (1 min) at its start |',
        '|---:|---:|---:|---:|---:|',
        *(
            f'| {run} | {forward:.2f} | {export:.1f} | {export / forward:.0f} | {load:.1f} |'
            for run, (forward, export, load) in enumerate(runs, 1)
        ),
        '',
    ]
    return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--variant', choices=list(VARIANTS), default='HAT-S')
    parser.add_argument('--reps', type=int, default=2)
    parser.add_argument('--output', type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    write_results(args.output, f'onnx-export-{args.variant.lower()}', section(args, bench(args)))
    print(f'wrote {args.output}')


if __name__ == '__main__':
    main()

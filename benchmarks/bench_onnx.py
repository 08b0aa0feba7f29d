#!/usr/bin/env python
"""Speed of the exported ONNX graph in onnxruntime against the torch model (fast-fp32, eager).

Each variant (randomly initialised: speed does not depend on the weights) is exported once by
`export_onnx` with dynamic sizes, then both backends run every size with the same thread count,
interleaved so that load from other processes hits them alike: median latency of the timed runs
after warm-up, and the max abs difference of their outputs. onnxruntime runs on the CPU, or with
CUDAExecutionProvider against torch on CUDA when `--device cuda` and onnxruntime has it.

It rewrites the section `onnx-<device>` of benchmarks/RESULTS.md and keeps the others.

    python benchmarks/bench_onnx.py --variants HAT-S,HAT --sizes 64x64,256x256 --warmup 1 --reps 2
"""

from __future__ import annotations

import hat_basicsr  # noqa: F401  (first: applies the entry points' thread policy before torch loads)

# isort: split
import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import onnxruntime
import torch
from bench_hat import COMMON, RESULTS, VARIANTS, machine_description, parse_size, write_results

from hat_basicsr import HAT
from hat_basicsr.utils.onnx_deploy import OPSET, OnnxModel, export_onnx, providers_for


def timed(fn: Callable[[], torch.Tensor], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def onnx_runner(path: Path, device: torch.device) -> OnnxModel:
    """The exported file in onnxruntime with torch's CPU thread count (all optimisations on).

    Its threads do not spin-wait after a run: spinning threads would take the cores from the torch
    run interleaved with it.
    """
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    session = onnxruntime.InferenceSession(str(path), options, providers=providers_for(device))
    return OnnxModel(session, str(path))


def bench(args: argparse.Namespace, device: torch.device) -> List[str]:
    rows = []
    for name in args.variants:
        model = HAT(**COMMON, **VARIANTS[name]).eval()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f'{name}.onnx'
            start = time.perf_counter()
            export_onnx(model, path, scale=COMMON['upscale'], verify_tolerance=None)
            export_seconds = time.perf_counter() - start
            runner = onnx_runner(path, device)
            model = model.to(device)
            for height, width in args.sizes:
                lq = torch.rand(1, 3, height, width, device=device)
                with torch.inference_mode():
                    backends = {'torch': partial(model, lq), 'onnxruntime': partial(runner, lq)}
                    diff = (backends['torch']() - backends['onnxruntime']()).abs().max().item()
                    times = {backend: [] for backend in backends}
                    for rep in range(args.warmup + args.reps):
                        for backend, fn in backends.items():
                            seconds = timed(fn, device)
                            if rep >= args.warmup:
                                times[backend].append(seconds)
                medians = {backend: statistics.median(values) for backend, values in times.items()}
                rows.append(
                    f'| {name} | {height}x{width} | {medians["torch"] * 1e3:,.1f} | '
                    f'{medians["onnxruntime"] * 1e3:,.1f} | {medians["onnxruntime"] / medians["torch"]:.2f} | '
                    f'{diff:.1e} | {export_seconds:.0f} |'
                )
                print(rows[-1], flush=True)
    return rows


def section(args: argparse.Namespace, device: torch.device, rows: List[str]) -> str:
    lines = [
        f'## ONNX: onnxruntime vs torch, {device.type.upper()}',
        '',
        f'- machine: {machine_description(device)}',
        f'- torch {torch.__version__}, onnxruntime {onnxruntime.__version__} '
        f'({", ".join(providers_for(device)[:1]) if device.type == "cpu" else "CUDAExecutionProvider"}), '
        f'Python {platform.python_version()}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC',
        f'- command: `python benchmarks/bench_onnx.py {" ".join(sys.argv[1:])}` (warm-up {args.warmup}, '
        f'timed runs {args.reps}, median; backends interleaved)',
        f'- graph: `export_onnx` (torch.export, opset {OPSET}, fp32, dynamic batch/height/width); torch: '
        'eager, fused attention (fast-fp32)',
    ]
    if device.type == 'cpu':
        lines.append(f'- load average at the end: {os.getloadavg()[0]:.1f} (other processes share this machine)')
    lines += [
        '',
        '### Inference, x4, batch 1',
        '',
        '| variant | input | torch (ms) | onnxruntime (ms) | onnxruntime / torch | max abs diff | export (s) |',
        '|---|---|---:|---:|---:|---:|---:|',
        *rows,
        '',
    ]
    return '\n'.join(lines)


def variant_names(text: str) -> List[str]:
    names = [item for item in text.split(',') if item]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f'unknown variants {unknown}; choose from {list(VARIANTS)}')
    return names


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--variants', type=variant_names, default=['HAT-S', 'HAT'])
    parser.add_argument(
        '--sizes',
        type=lambda text: [parse_size(size) for size in text.split(',') if size],
        default=[(64, 64), (256, 256)],
    )
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--output', type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    write_results(args.output, f'onnx-{device.type}', section(args, device, bench(args, device)))
    print(f'wrote {args.output}')


if __name__ == '__main__':
    main()

#!/usr/bin/env python
"""Wall time of `hat-basicsr upscale` over a folder: one process against torchrun ranks that split it.

Each command runs the whole job as a user would (process start, model load, every image), with one
thread per process on the CPU, interleaved (one process, ranks, one process, ranks, ...) so load
from other processes hits both alike; each pair gives a ratio ranks / one process. The machine's
own limit is measured in the same run: pure matmul work done by one process against the same work
split over as many processes started together (no start-up, no I/O), so the ratio tells what the
cores allowed while the benchmark ran. The ranks' outputs are checked byte for byte against the
single process's. The weights are random (speed does not depend on them), saved as a checkpoint.

It rewrites the section `batch-inference-<device>` of benchmarks/RESULTS.md and keeps the others.

    python benchmarks/bench_batch_inference.py --variant HAT-S --images 8 --size 96x96 --pairs 3
    python benchmarks/bench_batch_inference.py --device cuda --nproc 8 --images 64 --size 480x640
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from bench_hat import COMMON, RESULTS, VARIANTS, machine_description, parse_size, write_results
from report import cpu_model

from hat_basicsr import HAT

BIN = Path(sys.executable).parent
# A child of the matmul limit: it reports 'ready' once torch is imported, computes on 'go', and
# prints the wall-clock time it finished.
MATMUL_CHILD = """
import sys, time, torch
count = int(sys.argv[1])
a = torch.rand(512, 512)
print('ready', flush=True)
sys.stdin.readline()
for _ in range(count):
    a @ a
print(time.time(), flush=True)
"""
MATMUL_FLOP = 2 * 512**3


def child_env(device: str) -> Dict[str, str]:
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    if device == 'cpu':
        env['CUDA_VISIBLE_DEVICES'] = ''
    return env


def matmul_wall(counts: Sequence[int]) -> float:
    """Seconds from 'go' until the last of len(counts) one-thread processes finished its matmuls."""
    children = [
        subprocess.Popen(
            [sys.executable, '-c', MATMUL_CHILD, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env('cpu'),
        )
        for count in counts
    ]
    for child in children:
        assert child.stdout.readline().strip() == 'ready'
    start = time.time()
    for child in children:
        child.stdin.write('go\n')
        child.stdin.flush()
    ends = [float(child.communicate()[0]) for child in children]
    return max(ends) - start


def make_job(folder: Path, variant: str, images: int, size: Tuple[int, int]) -> Path:
    """`images` random RGB PNGs of `size` under folder/in, and a checkpoint of the variant."""
    torch.manual_seed(0)
    checkpoint = folder / f'{variant}.pth'
    torch.save({'params_ema': HAT(**COMMON, **VARIANTS[variant]).state_dict()}, checkpoint)
    rng = np.random.default_rng(0)
    (folder / 'in').mkdir()
    for index in range(images):
        cv2.imwrite(str(folder / 'in' / f'frame{index:04d}.png'), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return checkpoint


def timed_command(command: List[str], output: Path, device: str) -> float:
    shutil.rmtree(output, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=child_env(device), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def outputs(folder: Path) -> Dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def section(args: argparse.Namespace, rows: List[str], summary: List[str]) -> str:
    height, width = args.size
    load = ', '.join(f'{value:.1f}' for value in os.getloadavg())
    return '\n'.join(
        [
            f'## Batch inference: one process vs {args.nproc} torchrun ranks, {args.device.upper()}',
            '',
            f'- machine: {machine_description(torch.device("cuda")) if args.device == "cuda" else cpu_model()}, '
            f'{os.cpu_count()} cores, one thread per process',
            f'- torch {torch.__version__}, Python {platform.python_version()}, '
            f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC',
            f'- command: `python benchmarks/bench_batch_inference.py {" ".join(sys.argv[1:])}`',
            f'- job: {args.images} PNGs of {height}x{width}, {args.variant} x{COMMON["upscale"]} (random weights); '
            f'A = `hat-basicsr upscale IN -o OUT -m {args.variant}.pth --device {args.device}`, '
            f'B = `torchrun --nproc_per_node={args.nproc} --no-python hat-basicsr upscale ...` (same arguments); '
            'wall time of the whole command, start-up and model load included',
            f'- load average (1, 5, 15 min) at the end: {load} (other processes share this machine)',
            '',
            '| pair | A: one process (s) | B: ranks (s) | B / A | matmul split / whole |',
            '|---:|---:|---:|---:|---:|',
            *rows,
            '',
            *summary,
        ]
    )


def run(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        checkpoint = make_job(folder, args.variant, args.images, args.size)
        common = ['upscale', str(folder / 'in'), '-m', str(checkpoint), '--device', args.device]
        one = [str(BIN / 'hat-basicsr'), *common, '-o', str(folder / 'one')]
        ranks = [str(BIN / 'torchrun'), f'--nproc_per_node={args.nproc}', '--no-python', str(BIN / 'hat-basicsr')]
        ranks += [*common, '-o', str(folder / 'ranks')]
        split = [-(-args.matmuls // args.nproc)] * args.nproc
        rows, ratios, limits, rates = [], [], [], []
        for pair in range(1, args.pairs + 1):
            whole_seconds = matmul_wall([args.matmuls])
            limit = matmul_wall(split) / whole_seconds
            one_seconds = timed_command(one, folder / 'one', args.device)
            ranks_seconds = timed_command(ranks, folder / 'ranks', args.device)
            if outputs(folder / 'ranks') != outputs(folder / 'one'):
                raise SystemExit('the ranks wrote other outputs than the single process')
            ratios.append(ranks_seconds / one_seconds)
            limits.append(limit)
            rates.append(args.matmuls * MATMUL_FLOP / whole_seconds / 1e9)
            rows.append(f'| {pair} | {one_seconds:.1f} | {ranks_seconds:.1f} | {ratios[-1]:.2f} | {limit:.2f} |')
            print(rows[-1], flush=True)
    summary = [
        f'Median B / A: **{statistics.median(ratios):.2f}** (goal <= 0.6 with 2 ranks on 2 cores); the machine '
        f'allowed {statistics.median(limits):.2f} for pure matmul work split the same way '
        f'(one thread: {statistics.median(rates):.1f} GFLOP/s, 512x512 fp32 matmuls). Outputs of B identical '
        'to A, byte for byte, in every pair.'
    ]
    return section(args, rows, summary)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--nproc', type=int, default=2, help='torchrun ranks (processes per node)')
    parser.add_argument('--variant', choices=list(VARIANTS), default='HAT-S')
    parser.add_argument('--images', type=int, default=8)
    parser.add_argument('--size', type=parse_size, default=(96, 96), help='HxW of each image')
    parser.add_argument('--pairs', type=int, default=3, help='A/B pairs, interleaved')
    parser.add_argument('--matmuls', type=int, default=400, help='512x512 matmuls of the machine-limit probe')
    parser.add_argument('--results', type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    write_results(args.results, f'batch-inference-{args.device}', run(args))
    print(f'wrote section batch-inference-{args.device} of {args.results}')


if __name__ == '__main__':
    main()

#!/usr/bin/env python
"""Steadiness on a shared CPU: the entry points' thread policy (hat_basicsr/utils/threads.py:
OMP_WAIT_POLICY=PASSIVE, threads = usable CPUs) against torch's defaults, alone and beside other
busy torch processes.

Workloads, each timed in a fresh process (the OpenMP runtime reads its settings once, at start):
- upscale: `hat-basicsr upscale --bf16`'s model runner, HAT-S x4 (random weights) on a 64x64 image
  (--size);
- demo-step: one training step of the demo's network (options/train/demo, HAT-tiny x2): a batch of
  4 LR patches of 16x16, L1 loss, backward, Adam.
Median seconds per call after one warm-up; a process stops after --reps calls or --budget seconds.

Variants: 'torch-default' runs this file through `python -c` (a program that imports hat_basicsr:
no policy, torch's defaults); 'policy' runs it as a script of benchmarks/ (an entry point: the
policy applies). The caller's OMP_*/GOMP_*/MKL_NUM_THREADS are removed from both.
Loads: 'idle' (nothing of ours), 'one job' (one other torch process, default threads, multiplying
1024x1024 matrices in a loop) and 'heavy' (three of them). Within a load the variants alternate
A B A B. The load average is the machine's, including other users.

    python benchmarks/bench_threads.py             # about 10-15 minutes on 2 idle cores
    python benchmarks/bench_threads.py --rounds 1 --loads idle,one-job
"""

import hat_basicsr  # noqa: F401  (first: applies the entry points' thread policy before torch loads)

# isort: split
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import yaml
from report import cpu_model, replace_section

from hat_basicsr import HAT
from hat_basicsr.archs.hat_config import RELEASE_OPTIONS, RELEASE_VARIANTS

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
RESULTS = HERE.with_name('RESULTS.md')
DEMO_OPTIONS = REPO / 'options' / 'train' / 'demo' / 'HAT-tiny_SRx2_demo.yml'
WORKLOADS = ('upscale', 'demo-step')
VARIANTS = ('torch-default', 'policy')
LOADS = {'idle': 0, 'one-job': 1, 'heavy': 3}
CALLER_THREAD_VARIABLES = ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'MKL_NUM_THREADS')
COMPETITOR = 'import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a = (a @ a).clamp_(-1, 1)\n'


def upscale_step(size: int) -> Callable[[], None]:
    """HAT-S x4 on a size x size image through upscale's runner with --bf16."""
    from hat_basicsr.cli.upscale import make_runner

    torch.manual_seed(0)
    model = HAT(**RELEASE_OPTIONS, **RELEASE_VARIANTS['HAT-S'], upscale=4).eval()
    run_model = make_runner(model, 4, torch.device('cpu'), 0, 0, bf16=True)
    image = torch.rand(size, size, 3).numpy()
    return lambda: run_model(image)


def demo_step(_size: int) -> Callable[[], None]:
    """One optimisation step of the demo's network on a batch of its training shape."""
    opt = yaml.safe_load(DEMO_OPTIONS.read_text())
    network = {key: value for key, value in opt['network_g'].items() if key != 'type'}
    torch.manual_seed(0)
    model = HAT(**network).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    train = opt['datasets']['train']
    lq_size = train['gt_size'] // opt['scale']
    lq = torch.rand(train['batch_size_per_gpu'], 3, lq_size, lq_size)
    gt = torch.rand(train['batch_size_per_gpu'], 3, train['gt_size'], train['gt_size'])

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.l1_loss(model(lq), gt).backward()
        optimizer.step()

    return step


def time_workload(name: str, size: int, reps: int, budget: float) -> Dict:
    """Runs in the child process: one warm-up, then up to `reps` timed calls within `budget` seconds."""
    step = {'upscale': upscale_step, 'demo-step': demo_step}[name](size)
    step()
    times: List[float] = []
    started = time.perf_counter()
    while len(times) < reps and (not times or time.perf_counter() - started < budget):
        begin = time.perf_counter()
        step()
        times.append(time.perf_counter() - begin)
    return {
        'seconds': statistics.median(times),
        'calls': len(times),
        'threads': torch.get_num_threads(),
        'wait_policy': os.environ.get('OMP_WAIT_POLICY', 'unset'),
    }


def child_environment() -> Dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in CALLER_THREAD_VARIABLES}
    env['CUDA_VISIBLE_DEVICES'] = ''
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
    return env


def run_child(variant: str, workload: str, size: int, reps: int, budget: float) -> Dict:
    arguments = ['--workload', workload, '--size', str(size), '--reps', str(reps), '--budget', str(budget)]
    if variant == 'policy':
        command = [sys.executable, str(HERE), *arguments]
    else:
        runner = (
            'import os, runpy, sys; sys.argv = sys.argv[1:]; sys.path.insert(0, os.path.dirname(sys.argv[0])); '
            "runpy.run_path(sys.argv[0], run_name='__main__')"
        )
        command = [sys.executable, '-c', runner, str(HERE), *arguments]
    proc = subprocess.run(command, env=child_environment(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f'{variant} {workload} failed:\n{proc.stderr[-3000:]}')
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), 'load': os.getloadavg()[0]}


def matmul_rate() -> float:
    """This process's fp32 2048x2048 matmul rate (TFLOP/s), the machine's own limit."""
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    a @ b
    begin = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 2048**3 / (time.perf_counter() - begin) / 1e12


def measure(
    loads: Sequence[str], workloads: Sequence[str], size: int, rounds: int, reps: int, budget: float
) -> Dict[str, Dict[str, Dict[str, List]]]:
    results: Dict[str, Dict[str, Dict[str, List]]] = {}
    for load in loads:
        competitors = [
            subprocess.Popen([sys.executable, '-c', COMPETITOR], env=child_environment()) for _ in range(LOADS[load])
        ]
        try:
            time.sleep(2 if competitors else 0)
            for _ in range(rounds):
                for workload in workloads:
                    for variant in VARIANTS:
                        run = run_child(variant, workload, size, reps, budget)
                        print(f'{load:8} {workload:10} {variant:14} {json.dumps(run)}', flush=True)
                        results.setdefault(load, {}).setdefault(workload, {}).setdefault(variant, []).append(run)
        finally:
            for process in competitors:
                process.kill()
                process.wait()
    return results


def median(runs: List[Dict]) -> float:
    return statistics.median(run['seconds'] for run in runs)


def over_idle(runs: List[Dict], idle: Optional[List[Dict]]) -> str:
    return f'{median(runs) / median(idle):.1f}' if idle else '-'


def report(
    results: Dict, loads: Sequence[str], workloads: Sequence[str], size: int, rate: float, load_start: float
) -> str:
    lines = [
        f'- {datetime.date.today()}, {cpu_model()}, {len(os.sched_getaffinity(0))} CPUs, torch {torch.__version__}, '
        f'Python {platform.python_version()}; fp32 2048x2048 matmul {rate:.3f} TFLOP/s (this run, policy threads); '
        f'load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end',
        f'- upscale = HAT-S x4 bf16 on {size}x{size}; demo-step = one training step of the demo network',
        '- seconds per call (median over runs of each run\'s median); "x idle" = over the same variant idle; '
        'load = 1-minute load average when the run ended',
        '- "idle" = no competing job of this script; other users\' processes show in the load average (the matmul '
        "rate above against an idle machine's tells how much of the machine was left)",
        '',
        '| load | workload | torch defaults (s) | x idle | policy (s) | x idle | policy speed-up | load avg |',
        '|---|---|---:|---:|---:|---:|---:|---:|',
    ]
    for load in loads:
        for workload in workloads:
            default, policy = (results[load][workload][variant] for variant in VARIANTS)
            idle = results.get('idle', {}).get(workload, {})
            loads_seen = [run['load'] for run in default + policy]
            speedup = median(default) / median(policy)
            lines.append(
                f'| {load} | {workload} | {median(default):.3f} | {over_idle(default, idle.get("torch-default"))} | '
                f'{median(policy):.3f} | {over_idle(policy, idle.get("policy"))} | {speedup:.1f}x | '
                f'{min(loads_seen):.1f}-{max(loads_seen):.1f} |'
            )
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workload', choices=WORKLOADS, help=argparse.SUPPRESS)  # the child's side
    parser.add_argument('--loads', default=','.join(LOADS), help=f'comma-separated, from {list(LOADS)}')
    parser.add_argument('--workloads', default=','.join(WORKLOADS), help=f'comma-separated, from {list(WORKLOADS)}')
    parser.add_argument('--size', type=int, default=64, help='side of the upscale input (default 64)')
    parser.add_argument('--rounds', type=int, default=2, help='A B rounds per load and workload (default 2)')
    parser.add_argument('--reps', type=int, default=5, help='timed calls per process (default 5)')
    parser.add_argument('--budget', type=float, default=40.0, help='seconds of timed calls per process (default 40)')
    parser.add_argument('--output', type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.workload:
        print(json.dumps(time_workload(args.workload, args.size, args.reps, args.budget)))
        return
    loads, workloads = args.loads.split(','), args.workloads.split(',')
    unknown = sorted(set(loads) - set(LOADS)) + sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f'unknown load(s) or workload(s) {unknown}; choose from {list(LOADS)}, {list(WORKLOADS)}')
    load_start = os.getloadavg()[0]
    rate = matmul_rate()
    results = measure(loads, workloads, args.size, args.rounds, args.reps, args.budget)
    text = report(results, loads, workloads, args.size, rate, load_start)
    print(text)
    replace_section(
        args.output,
        '<!-- bench_threads begin -->',
        '<!-- bench_threads end -->',
        f'## CPU steadiness: thread policy vs torch defaults (`python benchmarks/bench_threads.py`)\n\n{text}',
        '# HAT benchmark results',
    )


if __name__ == '__main__':
    main()

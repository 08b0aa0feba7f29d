#!/usr/bin/env python
"""Speed and memory of HAT x4: release attention vs fused attention, fp32 vs bf16, eager vs compiled.

Inference: forward latency (median of timed runs after warm-up, synchronised) and peak memory for
every variant x input size x mode. Training: one step (batch x 64x64 patches, L1 loss, backward,
Adam) with and without gradient checkpointing. Achieved TFLOP/s come from FlopCounterMode counts
taken on the meta device (2 FLOPs per multiply-add).

Modes are '<attention>-<precision>[-compiled][-ckpt][-autocast]': attention 'reference' (the
release's matmul-softmax-matmul) or 'fast' (scaled_dot_product_attention); precision 'fp32' or
'bf16' (inference: what `upscale --bf16` runs, hat_basicsr.archs.acceleration.bf16_inference, i.e.
weights cast once on CPU and autocast on CUDA; training: autocast); '-autocast' forces bf16
autocast in inference; '-compiled' wraps the network in torch.compile; '-ckpt' (training)
checkpoints every block. Runs of all modes are interleaved so that load from other processes hits
them alike, and so are two 2048x2048 matmuls (fp32 and bf16), the machine's own limit: each
inference row reports its rate as a fraction of the matmul rate of its precision measured in the
same interleaved runs, and the load average over them.

Peak memory: on CUDA the caching allocator's peak (weights included); on CPU the peak of the tensor
storage allocated during the call and alive at once, tracked op by op in one more, untimed run
(LiveTensorPeak; weights excluded; not for compiled modes).

It rewrites one section of benchmarks/RESULTS.md (by default the one for its device) and keeps the others.

    python benchmarks/bench_hat.py --quick                  # CPU-sized run
    python benchmarks/bench_hat.py --device cuda            # full GPU run
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
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from report import cpu_model, replace_section
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from hat_basicsr import HAT
from hat_basicsr.archs.acceleration import AccelerationOptions, apply_acceleration, bf16_inference
from hat_basicsr.archs.hat_config import RELEASE_OPTIONS, RELEASE_VARIANTS
from hat_basicsr.utils.autocast import autocast_context

COMMON = {**RELEASE_OPTIONS, 'upscale': 4}
VARIANTS = RELEASE_VARIANTS
INFERENCE_MODES = ('reference-fp32', 'fast-fp32', 'fast-bf16', 'fast-bf16-compiled')
TRAIN_MODES = ('reference-fp32', 'reference-fp32-ckpt', 'fast-fp32', 'fast-fp32-ckpt', 'fast-bf16', 'fast-bf16-ckpt')
SIZES = ((64, 64), (256, 256), (480, 640))
MATMUL_SIZE = 2048
MATMUL_STEPS = {'matmul-fp32': torch.float32, 'matmul-bf16': torch.bfloat16}
RESULTS = Path(__file__).with_name('RESULTS.md')


@dataclass(frozen=True)
class Mode:
    """A parsed mode name such as 'fast-bf16-compiled'."""

    name: str
    attn_impl: str
    bf16: bool
    compiled: bool
    checkpoint: bool
    autocast: bool

    @classmethod
    def parse(cls, name: str) -> 'Mode':
        parts = name.split('-')
        if (
            len(parts) < 2
            or parts[0] not in ('reference', 'fast')
            or parts[1] not in ('fp32', 'bf16')
            or not set(parts[2:]) <= {'compiled', 'ckpt', 'autocast'}
        ):
            raise argparse.ArgumentTypeError(
                f'bad mode {name!r}: <reference|fast>-<fp32|bf16>[-compiled][-ckpt][-autocast]'
            )
        return cls(
            name,
            'reference' if parts[0] == 'reference' else 'sdpa',
            parts[1] == 'bf16',
            'compiled' in parts,
            'ckpt' in parts,
            'autocast' in parts,
        )


@dataclass
class Row:
    variant: str
    shape: str
    mode: str
    seconds: Optional[float] = None
    peak_bytes: Optional[int] = None
    tflop: Optional[float] = None
    note: str = ''
    limit_tflops: Optional[float] = None
    load: Optional[float] = None


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class LiveTensorPeak(TorchDispatchMode):
    """Peak bytes of the tensor storage allocated by the code run inside and alive at once (CPU).

    Counted op by op: an output whose storage is none of the op's inputs' is a new allocation,
    freed when the last tensor using it dies. This is what CUDA's allocator peak measures, without
    the caching and fragmentation of the CPU allocator that make resident-set growth swing by 2x
    between runs. Scratch memory inside a kernel (the fused attention's per-thread blocks) is not
    seen; tensors that existed before (weights, inputs, optimizer state) are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: Dict[int, List[int]] = {}  # storage address -> [bytes, tensors using it]
        self.current = self.peak = 0

    def _release(self, address: int) -> None:
        entry = self.live[address]
        entry[1] -= 1
        if not entry[1]:
            self.current -= entry[0]
            del self.live[address]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor)}
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, Tensor) or tensor.device.type != 'cpu':
                continue
            storage = tensor.untyped_storage()
            address = storage.data_ptr()
            if address in self.live:
                self.live[address][1] += 1
            elif address not in inputs and storage.nbytes():
                self.live[address] = [storage.nbytes(), 1]
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            else:
                continue
            weakref.finalize(tensor, self._release, address)
        return out


def live_tensor_peak(step: Callable[[], None]) -> int:
    with LiveTensorPeak() as tracker:
        step()
    return tracker.peak


def build(variant: str, device: torch.device) -> HAT:
    torch.manual_seed(0)
    return HAT(**COMMON, **VARIANTS[variant]).to(device)


def count_flops(variant: str, shape: Tuple[int, ...], train: bool) -> float:
    """FLOPs of one forward (or forward + backward when `train`), counted on the meta device."""
    with torch.device('meta'):
        model = HAT(**COMMON, **VARIANTS[variant], attn_impl='reference').train(train)
        x = torch.rand(shape)
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(train):
        out = model(x)
        if train:
            out.mean().backward()
    return counter.get_total_flops()


def run_interleaved(
    steps: Dict[str, Callable[[], None]], device: torch.device, warmup: int, reps: int, untracked: Sequence[str] = ()
) -> Dict[str, Tuple[float, Optional[int]]]:
    """Median seconds and peak memory per step; runs of the steps alternate. On CPU the memory of
    the `untracked` steps is not measured (compiled kernels are invisible to LiveTensorPeak)."""
    for _ in range(warmup):
        for step in steps.values():
            step()
            synchronize(device)
    times: Dict[str, List[float]] = {name: [] for name in steps}
    peaks = dict.fromkeys(steps, 0)
    for _ in range(reps):
        for name, step in steps.items():
            synchronize(device)
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
            if device.type == 'cuda':
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated(device))
    if device.type == 'cpu':  # an untimed run each: tracking slows the ops down
        peaks = {name: None if name in untracked else live_tensor_peak(step) for name, step in steps.items()}
    return {name: (statistics.median(times[name]), peaks[name]) for name in steps}


def inference_steps(model: HAT, modes: Sequence[Mode], x: Tensor) -> Dict[str, Callable[[], None]]:
    steps = {}
    for mode in modes:
        runner = torch.compile(model) if mode.compiled else model
        if mode.bf16 and not mode.autocast:
            runner = bf16_inference(runner, x.device, True)

        def step(mode: Mode = mode, runner: Callable[[Tensor], Tensor] = runner) -> None:
            apply_acceleration(model, AccelerationOptions(attn_impl=mode.attn_impl))
            with torch.no_grad(), autocast_context(x.device, mode.bf16 and mode.autocast):
                runner(x)

        steps[mode.name] = step
    return steps


def mode_dtype(name: str) -> torch.dtype:
    return torch.bfloat16 if Mode.parse(name).bf16 else torch.float32


def matmul_steps(device: torch.device) -> Dict[str, Callable[[], None]]:
    """One MATMUL_SIZE-square matmul per precision: the machine's limit, timed beside the network."""
    steps = {}
    for name, dtype in MATMUL_STEPS.items():
        a, b = (torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=dtype) for _ in range(2))
        steps[name] = lambda a=a, b=b: a @ b
    return steps


def training_steps(model: HAT, modes: Sequence[Mode], lq: Tensor, gt: Tensor) -> Dict[str, Callable[[], None]]:
    steps = {}
    for mode in modes:
        runner = torch.compile(model) if mode.compiled else model
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99))

        def step(mode: Mode = mode, runner: nn.Module = runner, optimizer: torch.optim.Optimizer = optimizer) -> None:
            apply_acceleration(model, AccelerationOptions(attn_impl=mode.attn_impl, use_checkpoint=mode.checkpoint))
            optimizer.zero_grad(set_to_none=True)
            with autocast_context(lq.device, mode.bf16):
                loss = F.l1_loss(runner(lq), gt)
            loss.backward()
            optimizer.step()

        steps[mode.name] = step
    return steps


def too_heavy(device: torch.device, flops: float, args: argparse.Namespace) -> bool:
    return device.type == 'cpu' and flops > args.cpu_max_tflop * 1e12


def bench_inference(args: argparse.Namespace, device: torch.device) -> List[Row]:
    rows = []
    modes = [m for m in args.modes if not (m.compiled and device.type == 'cpu' and not args.cpu_compile)]
    skipped_compiled = [m.name for m in args.modes if m not in modes]
    for variant in args.variants:
        model = build(variant, device).eval()
        for height, width in args.sizes:
            shape = f'{height}x{width}'
            flops = count_flops(variant, (1, 3, height, width), train=False)
            if too_heavy(device, flops, args):
                rows += [
                    Row(
                        variant,
                        shape,
                        m.name,
                        tflop=flops / 1e12,
                        note=f'skipped on CPU: {flops / 1e12:.1f} TFLOP per call',
                    )
                    for m in args.modes
                ]
                continue
            x = torch.rand(1, 3, height, width, device=device)
            load_before = os.getloadavg()[0]
            results = run_interleaved(
                {**inference_steps(model, modes, x), **matmul_steps(device)},
                device,
                args.warmup,
                args.reps,
                [m.name for m in modes if m.compiled] + list(MATMUL_STEPS),
            )
            load = (load_before + os.getloadavg()[0]) / 2
            limits = {dtype: 2 * MATMUL_SIZE**3 / results.pop(name)[0] / 1e12 for name, dtype in MATMUL_STEPS.items()}
            rows += [
                Row(variant, shape, name, secs, peak, flops / 1e12, '', limits[mode_dtype(name)], load)
                for name, (secs, peak) in results.items()
            ]
            rows += [
                Row(
                    variant,
                    shape,
                    name,
                    tflop=flops / 1e12,
                    note='skipped on CPU: no faster than eager there, '
                    'see section cpu-compiled-64 (--cpu-compile runs it)',
                )
                for name in skipped_compiled
            ]
            print_rows(rows[-len(args.modes) :])
        del model
    return rows


def bench_training(args: argparse.Namespace, device: torch.device) -> List[Row]:
    rows = []
    shape = (args.train_batch, 3, 64, 64)
    for variant in args.train_variants:
        flops = count_flops(variant, shape, train=True)
        if too_heavy(device, flops / 3, args):
            rows += [
                Row(
                    variant,
                    f'{shape[0]}x64x64',
                    m.name,
                    tflop=flops / 1e12,
                    note=f'skipped on CPU: {flops / 1e12:.1f} TFLOP per step',
                )
                for m in args.train_modes
            ]
            continue
        model = build(variant, device).train()
        torch.manual_seed(0)
        lq = torch.rand(shape, device=device)
        gt = torch.rand(shape[0], 3, 256, 256, device=device)
        results = run_interleaved(
            training_steps(model, args.train_modes, lq, gt),
            device,
            args.train_warmup,
            args.reps,
            [m.name for m in args.train_modes if m.compiled],
        )
        rows += [
            Row(variant, f'{shape[0]}x64x64', name, secs, peak, flops / 1e12) for name, (secs, peak) in results.items()
        ]
        print_rows(rows[-len(args.train_modes) :])
        del model
    return rows


def print_rows(rows: Sequence[Row]) -> None:
    for row in rows:
        secs = f'{row.seconds * 1e3:10.1f} ms' if row.seconds is not None else row.note
        print(f'{row.variant:6s} {row.shape:10s} {row.mode:22s} {secs}', flush=True)


def fmt_memory(peak: Optional[int]) -> str:
    return '—' if peak is None else f'{peak / 2**20:,.0f} MiB'


def table(rows: Sequence[Row], what: str) -> List[str]:
    reference = {(r.variant, r.shape): r.seconds for r in rows if r.mode == 'reference-fp32'}
    lines = [
        f'| variant | {what} | mode | time (ms) | TFLOP/s | of matmul rate | peak memory | time / reference-fp32 '
        '| load | note |',
        '|---|---|---|---:|---:|---:|---:|---:|---:|---|',
    ]
    for r in rows:
        ref = reference.get((r.variant, r.shape))
        if r.seconds is None:
            lines.append(f'| {r.variant} | {r.shape} | {r.mode} | — | — | — | — | — | — | {r.note} |')
            continue
        ratio = f'{r.seconds / ref:.2f}' if ref else '—'
        rate = r.tflop / r.seconds
        limit = f'{rate / r.limit_tflops:.0%} of {r.limit_tflops:.4f}' if r.limit_tflops else '—'
        load = '—' if r.load is None else f'{r.load:.1f}'
        lines.append(
            f'| {r.variant} | {r.shape} | {r.mode} | {r.seconds * 1e3:,.1f} | {rate:.4f} | {limit} | '
            f'{fmt_memory(r.peak_bytes)} | {ratio} | {load} | {r.note} |'
        )
    return lines


def target_lines(inference: Sequence[Row], training: Sequence[Row], device: torch.device) -> List[str]:
    """Measured ratios next to the issue's targets (reported, not asserted)."""
    limit = 0.5 if device.type == 'cuda' else 0.8
    at_least, at_most = (lambda goal: lambda v: v >= goal), (lambda goal: lambda v: v <= goal)
    # (rows, label, numerator mode, denominator mode, measure, goal, only these inputs)
    targets = [
        (
            inference,
            f'fast-fp32 time / reference-fp32 time ≤ {limit}',
            'fast-fp32',
            'reference-fp32',
            'seconds',
            at_most(limit),
            None,
        ),
        (
            inference,
            'fast-fp32 peak memory / reference-fp32 ≤ 1/3',
            'fast-fp32',
            'reference-fp32',
            'peak_bytes',
            at_most(1 / 3),
            ('480x640', '512x512'),
        ),
        (
            training,
            'training: reference-fp32 time / fast-fp32 time ≥ 2',
            'reference-fp32',
            'fast-fp32',
            'seconds',
            at_least(2),
            None,
        ),
        (
            training,
            'training: reference-fp32 time / fast-bf16 time ≥ 2',
            'reference-fp32',
            'fast-bf16',
            'seconds',
            at_least(2),
            None,
        ),
    ]
    if device.type == 'cuda':
        targets.insert(
            1,
            (
                inference,
                'reference-fp32 time / fast-bf16 time ≥ 4',
                'reference-fp32',
                'fast-bf16',
                'seconds',
                at_least(4),
                None,
            ),
        )
    lines = ['| target | variant | input | measured | met |', '|---|---|---|---:|---|']
    for rows, label, top, bottom, measure, ok, only in targets:
        measured = {(r.variant, r.shape, r.mode): getattr(r, measure) for r in rows if r.seconds is not None}
        for variant, shape in dict.fromkeys((r.variant, r.shape) for r in rows):
            a, b = measured.get((variant, shape, top)), measured.get((variant, shape, bottom))
            if a is not None and b and (only is None or shape in only):
                lines.append(f'| {label} | {variant} | {shape} | {a / b:.2f} | {"yes" if ok(a / b) else "no"} |')
    return lines


def machine_description(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{cpu_model()} ({torch.backends.cpu.get_cpu_capability()} kernels), {torch.get_num_threads()} threads'


def section(args: argparse.Namespace, device: torch.device, inference: List[Row], training: List[Row]) -> str:
    title = device.type.upper() if args.section == device.type else f'{device.type.upper()}: {args.section}'
    lines = [
        f'## {title}',
        '',
        f'- machine: {machine_description(device)}',
        f'- torch {torch.__version__}, Python {platform.python_version()}, '
        f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC',
        f'- command: `python benchmarks/bench_hat.py {" ".join(sys.argv[1:])}` '
        f'(warm-up {args.warmup} inference / {args.train_warmup} training, timed runs {args.reps}, median)',
    ]
    if device.type == 'cpu':
        lines.append(f'- load average at the end: {os.getloadavg()[0]:.1f} (other processes share this machine)')
    if inference:
        lines += ['', '### Inference, x4, batch 1', '', *table(inference, 'input')]
    if training:
        lines += [
            '',
            f'### Training step: batch {args.train_batch} x 64x64 LR patches, L1 + Adam',
            '',
            *table(training, 'batch'),
        ]
    lines += ['', '### Targets (measured, not asserted)', '', *target_lines(inference, training, device), '']
    return '\n'.join(lines)


def write_results(path: Path, name: str, text: str) -> None:
    """Replace the section `name` of RESULTS.md, keep the rest."""
    replace_section(
        path,
        f'<!-- BEGIN {name} -->',
        f'<!-- END {name} -->',
        text,
        '# HAT benchmark results\n\nWritten by benchmarks/bench_hat.py.',
    )


def parse_size(text: str) -> Tuple[int, int]:
    height, width = text.lower().split('x')
    return int(height), int(width)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    split = lambda text: [item for item in text.split(',') if item]
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--variants', type=split, default=list(VARIANTS))
    parser.add_argument('--sizes', type=lambda t: [parse_size(s) for s in split(t)], default=list(SIZES))
    parser.add_argument(
        '--modes', type=lambda t: [Mode.parse(m) for m in split(t)], default=[Mode.parse(m) for m in INFERENCE_MODES]
    )
    parser.add_argument('--train-variants', type=split, default=list(VARIANTS))
    parser.add_argument(
        '--train-modes', type=lambda t: [Mode.parse(m) for m in split(t)], default=[Mode.parse(m) for m in TRAIN_MODES]
    )
    parser.add_argument('--train-batch', type=int, default=4)
    parser.add_argument('--no-inference', action='store_true')
    parser.add_argument('--no-training', action='store_true')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--train-warmup', type=int, default=None, help='warm-up steps (default: --warmup)')
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument(
        '--cpu-max-tflop',
        type=float,
        default=4.0,
        help='on CPU, skip inference combinations above this many TFLOP per call',
    )
    parser.add_argument('--cpu-compile', action='store_true', help='also run compiled modes on CPU')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='CPU-sized run: HAT-S and HAT at 64x64 and 256x256, training for HAT-S; one '
        'warm-up (none for training) and one timed run',
    )
    parser.add_argument('--output', type=Path, default=RESULTS)
    parser.add_argument(
        '--section',
        help='name of the RESULTS.md section this run replaces (default: the device '
        'type), so that runs with other settings can sit beside the main one',
    )
    args = parser.parse_args(argv)
    args.section = args.section or torch.device(args.device).type
    if args.quick:
        args.variants, args.sizes, args.train_variants = ['HAT-S', 'HAT'], [(64, 64), (256, 256)], ['HAT-S']
        args.train_modes = [Mode.parse(m) for m in ('reference-fp32', 'fast-fp32', 'fast-fp32-ckpt', 'fast-bf16')]
        args.warmup, args.train_warmup, args.reps = 1, 0, 1
    if args.train_warmup is None:
        args.train_warmup = args.warmup
    for name in args.variants + args.train_variants:
        if name not in VARIANTS:
            parser.error(f'unknown variant {name!r}; choose from {list(VARIANTS)}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    inference = [] if args.no_inference else bench_inference(args, device)
    training = [] if args.no_training else bench_training(args, device)
    write_results(args.output, args.section, section(args, device, inference, training))
    print(f'wrote {args.output}')


if __name__ == '__main__':
    main()

#!/usr/bin/env python
"""Start-up time of `hat-basicsr --help`, `hat-basicsr <command> --help` and an argument error,
against a bare `python -c pass` (target: <= 10x). Runs alternate between the commands; median wall
time of --runs each. About 30 s on 2 idle cores.

    python benchmarks/bench_cli_start.py
"""

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from report import cpu_model, replace_section

from hat_basicsr.cli import SUBCOMMANDS

RESULTS = Path(__file__).with_name('RESULTS.md')


def wall_time(command: List[str]) -> float:
    begin = time.perf_counter()
    subprocess.run(command, capture_output=True, check=False)
    return time.perf_counter() - begin


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs', type=int, default=5, help='runs per command (default 5)')
    parser.add_argument('--output', type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    script = shutil.which('hat-basicsr', path=os.pathsep.join([str(Path(sys.executable).parent), os.environ['PATH']]))
    if script is None:
        parser.error('the hat-basicsr console script is not installed (pip install -e .)')
    commands: Dict[str, List[str]] = {
        'python -c pass': [sys.executable, '-c', 'pass'],
        'hat-basicsr --help': [script, '--help'],
        **{f'hat-basicsr {name} --help': [script, name, '--help'] for name in SUBCOMMANDS},
        'hat-basicsr upscale in.png (argument error)': [script, 'upscale', 'in.png'],
    }
    times: Dict[str, List[float]] = {name: [] for name in commands}
    load_start = os.getloadavg()[0]
    for _ in range(args.runs):
        for name, command in commands.items():
            times[name].append(wall_time(command))
    bare = statistics.median(times['python -c pass'])
    lines = [
        f'- {datetime.date.today()}, {cpu_model()}, {len(os.sched_getaffinity(0))} CPUs; median wall time of '
        f'{args.runs} runs; load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end',
        '',
        '| command | seconds | x `python -c pass` |',
        '|---|---:|---:|',
    ]
    for name, measured in times.items():
        lines.append(f'| `{name}` | {statistics.median(measured):.3f} | {statistics.median(measured) / bare:.1f} |')
    text = '\n'.join(lines)
    print(text)
    replace_section(
        args.output,
        '<!-- bench_cli_start begin -->',
        '<!-- bench_cli_start end -->',
        f'## CLI start-up (`python benchmarks/bench_cli_start.py`)\n\n{text}',
        '# HAT benchmark results',
    )


if __name__ == '__main__':
    main()

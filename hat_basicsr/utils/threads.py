"""The CPU thread policy of hat_basicsr's entry points: OpenMP threads that sleep when they wait.

torch's CPU kernels run on GNU OpenMP (libgomp), whose idle threads spin for a while before they
sleep. Alone on a machine that saves microseconds; beside other busy processes each spinning thread
steals the core its sibling needs, and inference on a shared 2-core machine ran 3x to 30x slower than
its fair share. OMP_WAIT_POLICY=PASSIVE makes waiting threads sleep at once, and the thread count is
the CPUs this process may use (its affinity mask, capped by a cgroup CPU quota, which libgomp ignores).

libgomp reads these variables once, when torch loads it, so the policy works only when applied before
`import torch`. The entry points (`hat-basicsr`, `python -m hat_basicsr.train|test|demo`, the
benchmarks) apply it through hat_basicsr/__init__.py; a plain `import hat_basicsr` in another program
changes nothing. A variable the user set is never replaced.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Dict, MutableMapping, Optional

# libgomp's spin controls: a user who sets either has chosen how threads wait.
WAIT_VARIABLES = ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')
CGROUP_CPU_MAX = '/sys/fs/cgroup/cpu.max'


def usable_cpus(cpu_max_file: str = CGROUP_CPU_MAX) -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 quota ('max' = none)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
    try:
        with open(cpu_max_file) as stream:
            quota, period = stream.read().split()[:2]
        if quota != 'max':
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def thread_environment(environ: Optional[MutableMapping[str, str]] = None) -> Dict[str, str]:
    """The variables the policy adds to `environ` (default os.environ): only those the user left unset.
    Also usable to launch worker processes with the policy: env={**os.environ, **thread_environment()}."""
    environ = os.environ if environ is None else environ
    policy = {}
    if not any(name in environ for name in WAIT_VARIABLES):
        policy['OMP_WAIT_POLICY'] = 'PASSIVE'
    if 'OMP_NUM_THREADS' not in environ:
        policy['OMP_NUM_THREADS'] = str(usable_cpus())
    return policy


def apply_thread_policy() -> Dict[str, str]:
    """Add the policy to os.environ if torch is not loaded yet (after that, libgomp would ignore it
    and the thread count is torch.set_num_threads' business). Returns what was set."""
    if 'torch' in sys.modules:
        return {}
    policy = thread_environment()
    os.environ.update(policy)
    return policy

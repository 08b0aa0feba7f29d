"""What the entry points do before torch loads: `hat-basicsr` parses its arguments without importing
torch, BasicSR, onnx, OpenCV or numpy, and the entry points (not a plain `import hat_basicsr`) set
the CPU thread policy, leaving alone what the user set. Real processes, observed from inside by a
sitecustomize module that records, at exit, the heavy modules loaded and the thread settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from hat_basicsr.cli import SUBCOMMANDS
from hat_basicsr.entry_points import entry_point
from hat_basicsr.utils.threads import thread_environment, usable_cpus

from helpers import REPO_ROOT

HEAVY = ('torch', 'basicsr', 'onnx', 'onnxruntime', 'cv2', 'numpy')
PROBE = f"""
import atexit, json, os, sys

def _record():
    torch = sys.modules.get('torch')
    with open(os.environ['PROBE_OUT'], 'w') as stream:
        json.dump({{
            'heavy': [name for name in {HEAVY!r} if name in sys.modules],
            'env': {{name: os.environ.get(name) for name in ('OMP_WAIT_POLICY', 'OMP_NUM_THREADS')}},
            'torch_threads': torch.get_num_threads() if torch else None,
        }}, stream)

atexit.register(_record)
"""
DEMO_OPTIONS = 'options/train/demo/HAT-tiny_SRx2_demo.yml'


def console_script() -> str:
    script = shutil.which('hat-basicsr', path=os.pathsep.join([str(Path(sys.executable).parent), os.environ['PATH']]))
    assert script, 'the hat-basicsr console script is not installed (pip install -e .)'
    return script


def probe(command: List[str], tmp_path: Path, **env: str) -> Dict:
    """Run `command` from the repository root with the probe loaded and no thread variables of the
    caller (plus `env`); returns what the probe recorded and the process's exit status and stderr."""
    site = tmp_path / 'site'
    site.mkdir(exist_ok=True)
    (site / 'sitecustomize.py').write_text(PROBE)
    out = tmp_path / 'probe.json'
    base = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')}
    full_env = {
        **base,
        'PYTHONPATH': os.pathsep.join([str(site), str(REPO_ROOT)]),
        'PROBE_OUT': str(out),
        'CUDA_VISIBLE_DEVICES': '',
        **env,
    }
    proc = subprocess.run(command, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=300)
    assert out.exists(), f'the probe did not run: {proc.stderr[-3000:]}'
    return {**json.loads(out.read_text()), 'status': proc.returncode, 'stderr': proc.stderr}


@pytest.mark.parametrize(
    'arguments',
    [['--help']]
    + [[name, '--help'] for name in SUBCOMMANDS]
    + [['upscale', 'in.png'], ['lam', 'in.png', '-m', 'x.pth', '-o', 'y.png', '--box', '1', '2', '--steps', '0']],
    ids=lambda arguments: ' '.join(arguments),
)
def test_cli_answers_help_and_argument_errors_without_heavy_imports(arguments, tmp_path):
    result = probe([console_script(), *arguments], tmp_path, OMP_NUM_THREADS='1')
    assert result['heavy'] == [], result
    assert result['status'] == (0 if arguments[-1] == '--help' else 2), result['stderr']


def test_entry_point_sets_the_policy_before_torch_loads(tmp_path):
    result = probe([console_script(), 'info', DEMO_OPTIONS], tmp_path)
    assert result['status'] == 0, result['stderr']
    cpus = usable_cpus()
    assert result['env'] == {'OMP_WAIT_POLICY': 'PASSIVE', 'OMP_NUM_THREADS': str(cpus)}
    assert result['torch_threads'] == cpus


def test_train_entry_point_sets_the_policy(tmp_path):
    result = probe([sys.executable, '-m', 'hat_basicsr.train', '-opt', str(tmp_path / 'missing.yml')], tmp_path)
    assert result['status'] != 0 and 'missing.yml' in result['stderr']
    assert 'torch' in result['heavy'] and result['env']['OMP_WAIT_POLICY'] == 'PASSIVE'


def test_user_thread_settings_win(tmp_path):
    result = probe([console_script(), 'info', DEMO_OPTIONS], tmp_path, OMP_NUM_THREADS='1', OMP_WAIT_POLICY='ACTIVE')
    assert result['status'] == 0, result['stderr']
    assert result['env'] == {'OMP_WAIT_POLICY': 'ACTIVE', 'OMP_NUM_THREADS': '1'}
    assert result['torch_threads'] == 1


def test_plain_import_changes_no_thread_setting(tmp_path):
    result = probe([sys.executable, '-c', 'import hat_basicsr; hat_basicsr.HAT'], tmp_path)
    assert result['status'] == 0, result['stderr']
    assert 'torch' in result['heavy'] and 'basicsr' in result['heavy']
    assert result['env'] == {'OMP_WAIT_POLICY': None, 'OMP_NUM_THREADS': None}


def test_policy_adds_only_what_the_user_left_unset():
    cpus = str(usable_cpus())
    assert thread_environment({}) == {'OMP_WAIT_POLICY': 'PASSIVE', 'OMP_NUM_THREADS': cpus}
    assert thread_environment({'GOMP_SPINCOUNT': '10000'}) == {'OMP_NUM_THREADS': cpus}
    assert thread_environment({'OMP_WAIT_POLICY': 'ACTIVE', 'OMP_NUM_THREADS': '3'}) == {}


def test_usable_cpus_honours_a_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    quota = tmp_path / 'cpu.max'
    quota.write_text('50000 100000\n')  # half a CPU: one thread
    assert usable_cpus(str(quota)) == 1
    quota.write_text('max 100000\n')
    assert usable_cpus(str(quota)) == affinity
    assert usable_cpus(str(tmp_path / 'absent')) == affinity


@pytest.mark.parametrize(
    'argv, expected',
    [
        (['python', '-m', 'hat_basicsr.train', '-opt', 'x.yml'], 'hat_basicsr.train'),
        (['python', '-u', '-X', 'importtime', '-mhat_basicsr.demo'], 'hat_basicsr.demo'),
        (['python', '/venv/bin/hat-basicsr', 'upscale'], 'hat-basicsr'),
        (['python', str(REPO_ROOT / 'hat_basicsr' / 'test.py'), '-opt', 'x.yml'], 'hat_basicsr.test'),
        (['python', str(REPO_ROOT / 'benchmarks' / 'bench_hat.py')], 'benchmarks/bench_hat.py'),
        (['python', '-m', 'pytest'], None),
        (['python', '-c', 'import hat_basicsr', str(REPO_ROOT / 'benchmarks' / 'bench_hat.py')], None),
        (['python', 'host_train.py'], None),
        (['python'], None),
    ],
)
def test_entry_point_recognises_the_packages_programs_only(argv, expected):
    assert entry_point(argv) == expected

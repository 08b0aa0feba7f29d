"""The package metadata: the top-level setup.py (for `python setup.py develop` habits) describes the
same package as pyproject.toml and the installed distribution, setuptools reads pyproject.toml
without deprecation warnings, and a missing basicsr is named on import."""

from __future__ import annotations

import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

from setuptools.config.pyprojecttoml import read_configuration

import hat_basicsr

from helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / 'pyproject.toml'


def setup_py(*args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'setup.py'), *args],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_setup_py_reports_the_pyproject_name_and_the_package_version():
    project = read_configuration(PYPROJECT)['project']
    name, version = setup_py('--name', '--version').split()
    assert name == project['name']
    assert version == hat_basicsr.__version__ == metadata.version(project['name'])


def test_setup_py_packages_every_subpackage_on_disk(tmp_path):
    setup_py('-q', 'egg_info', '--egg-base', str(tmp_path))
    sources = (tmp_path / 'hat_basicsr.egg-info' / 'SOURCES.txt').read_text().split()
    packaged = {str(Path(source).parent) for source in sources if source.endswith('/__init__.py')}
    on_disk = {str(init.parent.relative_to(ROOT)) for init in (ROOT / 'hat_basicsr').rglob('__init__.py')}
    assert packaged == on_disk
    assert 'hat_basicsr/archs/hat_arch.py' in sources


def test_missing_basicsr_is_named_with_the_command_that_installs_it(tmp_path):
    # A module finder that hides basicsr, as in an environment where only `pip install -e .` ran.
    (tmp_path / 'sitecustomize.py').write_text(
        'import sys\n'
        'class HideBasicSR:\n'
        '    def find_spec(self, name, path=None, target=None):\n'
        "        if name == 'basicsr' or name.startswith('basicsr.'):\n"
        '            raise ModuleNotFoundError(f"No module named {name!r}", name=name)\n'
        'sys.meta_path.insert(0, HideBasicSR())\n'
    )
    proc = subprocess.run(
        [sys.executable, '-c', 'import hat_basicsr'],
        env={**subprocess_env(), 'PYTHONPATH': f'{tmp_path}:{ROOT}'},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line.startswith('ModuleNotFoundError: basicsr is not installed')
    assert 'pip install --no-deps --no-build-isolation basicsr==1.4.2' in last_line


def test_metadata_has_an_spdx_license_and_no_deprecation_warning():
    """setuptools >= 77 deprecates `License ::` classifiers (pip printed the warning four times per
    install); the licence is an SPDX expression in `project.license` instead."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        distribution = apply_configuration(Distribution(), str(PYPROJECT))
    assert [str(warning.message) for warning in caught] == []
    assert distribution.metadata.license_expression == 'Apache-2.0'
    assert not any(classifier.startswith('License ::') for classifier in distribution.metadata.get_classifiers())

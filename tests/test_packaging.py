"""The package metadata as setuptools reads it from pyproject.toml at install time."""

from __future__ import annotations

import warnings
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / 'pyproject.toml'


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

"""For BasicSR habits: `python setup.py develop` / `--version` work here too. Every piece of metadata
lives in pyproject.toml; this file adds nothing to it."""

from setuptools import setup

setup()

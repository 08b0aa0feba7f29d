"""Filesystems that refuse writes, for the full-disk and read-only tests.

Real ones are tmpfs mounts, which need root (as the test machines and CI run); where mounting is not
permitted those tests skip, and `simulate_full_disk` still covers the full disk: it points
atomic_write's writes at /dev/full, for which the kernel answers every write with ENOSPC."""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from hat_basicsr.utils import files


@contextmanager
def tmpfs(path: Path, size: int, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of `size` bytes mounted at `path` (created) for the duration; skips the test where
    mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    options = f'size={size}' + (',ro' if read_only else '')
    mount = shutil.which('mount')
    result = (
        subprocess.run([mount, '-t', 'tmpfs', '-o', options, 'tmpfs', str(path)], capture_output=True, text=True)
        if mount
        else None
    )
    if result is None or result.returncode != 0:
        pytest.skip(
            f'cannot mount a tmpfs at {path} ({result.stderr.strip() if result else "no mount command"}); '
            'the tests with a simulated full disk still run'
        )
    try:
        yield path
    finally:
        subprocess.run(['umount', '--lazy', str(path)], check=True)  # lazy: even if a failed test left a file open


def simulate_full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make atomic_write create its temporary file as usual but write into /dev/full (ENOSPC)."""
    create_file = files.create_file

    def create_on_a_full_disk(path: Path) -> int:
        os.close(create_file(path))
        return os.open('/dev/full', os.O_WRONLY)

    monkeypatch.setattr(files, 'create_file', create_on_a_full_disk)

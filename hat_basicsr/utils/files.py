"""Writing files so that a kill, a crash or a full disk never leaves a half-written one behind."""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Callable, List, Union

# atomic_write's temporary files: '.NAME.XXXXXXXX.tmp' beside NAME.
TEMPORARY_NAME = re.compile(r'^\..+\.[0-9a-f]{8}\.tmp$')


class OutputError(ValueError):
    """A file or folder that cannot be written; the message names it."""


def ensure_folder(path: Union[str, os.PathLike]) -> Path:
    """Create `path` (and its parents) if needed; an OutputError naming it if that is impossible."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f'cannot create folder {path}: {error.strerror or error}') from error
    return path


def atomic_write(path: Union[str, os.PathLike], write: Callable[[Path], None]) -> None:
    """Let `write` fill a temporary file beside `path`, flush it to disk, then rename it over `path`.

    Readers (a resumed training, `--skip-existing`) see the old file or the whole new one, never a
    part. The temporary file is created with the usual permissions (0666 less the umask); tempfile's
    0600 would survive the rename and hide checkpoints and images from other users.
    """
    path = Path(path)
    ensure_folder(path.parent)
    tmp = path.with_name(f'.{path.name}.{secrets.token_hex(4)}.tmp')  # matches TEMPORARY_NAME
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        with open(tmp, 'rb') as stream:
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise OutputError(f'cannot write {path}: {error.strerror or error}') from error
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(folder: Union[str, os.PathLike]) -> List[Path]:
    """Delete the temporary files that writes killed mid-way left in `folder` (they can be as large
    as a checkpoint); call it only when nothing is writing there."""
    folder = Path(folder)
    stale = [path for path in folder.iterdir() if path.is_file() and TEMPORARY_NAME.match(path.name)] \
        if folder.is_dir() else []
    for path in stale:
        path.unlink()
    return stale

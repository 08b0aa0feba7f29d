"""Writing files so that a kill, a crash or a full disk never leaves a half-written one behind."""

from __future__ import annotations

import io
import os
import re
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, Collection, List, Optional, Union

from hat_basicsr.errors import OutputError

# atomic_write's temporary files: '.NAME.XXXXXXXX.tmp' beside NAME.
TEMPORARY_NAME = re.compile(r'^\.(?P<target>.+)\.[0-9a-f]{8}\.tmp$')


def ensure_folder(path: Union[str, os.PathLike]) -> Path:
    """Create `path` (and its parents) if needed; an OutputError naming it if that is impossible."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f'cannot create folder {path}: {error.strerror or error}') from error
    return path


def temporary_path(path: Path) -> Path:
    """A fresh name beside `path` that TEMPORARY_NAME matches."""
    return path.with_name(f'.{path.name}.{secrets.token_hex(4)}.tmp')


def create_file(path: Path) -> int:
    """A descriptor of a new file with the usual permissions (0666 less the umask; tempfile's 0600
    would survive the rename and hide checkpoints and images from other users)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)


def ensure_writable_folder(path: Union[str, os.PathLike]) -> Path:
    """ensure_folder, then create and delete a probe file there: permission bits do not stop root,
    but read-only mounts and immutable folders do, and only a write tells."""
    folder = ensure_folder(path)
    probe = temporary_path(folder / 'write-probe')
    try:
        os.close(create_file(probe))
        probe.unlink()
    except OSError as error:
        raise OutputError(f'cannot write into folder {folder}: {error.strerror or error}') from error
    return folder


class RecordingFile(io.FileIO):
    """A file that keeps the OSError of its last failed write: writers such as torch.save turn it
    into an errno-less RuntimeError of their own, so the errno (ENOSPC) must be read from here."""

    failure: Optional[OSError] = None

    def write(self, data) -> Optional[int]:
        try:
            return super().write(data)
        except OSError as error:
            self.failure = error
            raise


def interrupt_behind(error: BaseException) -> Optional[KeyboardInterrupt]:
    """The Ctrl-C that `error` replaced, if any: torch.save turns a KeyboardInterrupt raised in the
    stream it writes to into a RuntimeError of its own, which would hide the interrupt from callers."""
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return error
        error = error.__cause__ or error.__context__
    return None


def cannot_write(path: Path, error: OSError) -> OutputError:
    return OutputError(f'cannot write {path}: {error.strerror or error}')


def atomic_write(path: Union[str, os.PathLike], write: Callable[[BinaryIO], None]) -> None:
    """Let `write` fill a temporary file beside `path` (through the stream it is given), flush it to
    disk, then rename it over `path`.

    Readers (a resumed training, `--skip-existing`) see the old file or the whole new one, never a
    part. Writing through our own stream keeps the permissions create_file gave, and lets a failed
    write (a full disk: ENOSPC) become an OutputError naming `path` with the system's reason,
    whatever `write` raised for it; the temporary file is removed whatever happens.
    """
    path = Path(path)
    ensure_folder(path.parent)
    tmp = temporary_path(path)
    try:
        with RecordingFile(create_file(tmp), 'w') as raw, io.BufferedWriter(raw) as stream:
            try:
                write(stream)
            except Exception as error:
                interrupt = interrupt_behind(error)
                if interrupt is not None:
                    raise interrupt from None
                if raw.failure is None:
                    raise
                raise cannot_write(path, raw.failure) from error
            stream.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise cannot_write(path, error) from error
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(folder: Union[str, os.PathLike], targets: Optional[Collection[str]] = None) -> List[Path]:
    """Delete the temporary files that writes killed mid-way left in `folder` (they can be as large
    as a checkpoint), only those for the file names `targets` when given; call it only when nothing
    is writing those files."""
    folder = Path(folder)
    matches = ((path, TEMPORARY_NAME.match(path.name)) for path in folder.iterdir()) if folder.is_dir() else ()
    stale = [
        path
        for path, match in matches
        if match and path.is_file() and (targets is None or match.group('target') in targets)
    ]
    for path in stale:
        path.unlink()
    return stale

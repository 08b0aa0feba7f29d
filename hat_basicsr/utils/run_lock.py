"""One training per experiment name: a run holds `experiments/<name>.lock` while it lives.

Without it two runs with the same `name` destroy each other: BasicSR archives the live run's folder
(mkdir_and_rename) and the first run keeps saving into the second run's folder, or `--auto_resume`
resumes a live run's state and both write checkpoints into one folder. The lock file sits beside the
experiment folder, not in it, since BasicSR renames that folder. It is an flock (the kernel releases
it when its process dies, even by kill -9) and records the owner's pid, host and start time, for the
refusal message and for stale files: a file left by a process that no longer runs on this host is
taken over; one left by another host is refused, as this host cannot tell whether that run lives.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from hat_basicsr.errors import ExperimentInUseError, OutputError
from hat_basicsr.utils.files import ensure_folder

logger = logging.getLogger('basicsr')
# Locks held by this process: lock path -> open file descriptor holding the flock.
_held: Dict[str, int] = {}


def _process_start(pid: int) -> Optional[str]:
    """The kernel's start time of `pid` (clock ticks since boot), which tells a reused pid from its
    first owner; None where /proc does not say (no such process, or not Linux)."""
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return None
    return stat.rsplit(')', 1)[1].split()[19]


def _owner_lives(owner: Dict[str, Any]) -> bool:
    """Whether the process a lock file names still runs on this host (the caller checked the host)."""
    pid = owner.get('pid')
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, under another user
    started = _process_start(pid)
    return started is None or owner.get('started') in (None, started)


def _describe(owner: Dict[str, Any]) -> str:
    if not owner:
        return 'which has not recorded its pid yet'
    return f'pid {owner.get("pid")} on host {owner.get("host")}, started {owner.get("time", "at an unknown time")}'


def _in_use(name: str, owner: Dict[str, Any], path: str) -> ExperimentInUseError:
    return ExperimentInUseError(
        f"experiment '{name}' is being trained by another run ({_describe(owner)}; "
        f'lock {path}): wait for it to end, or give this run another name'
    )


def _read_owner(descriptor: int) -> Dict[str, Any]:
    """The owner a lock file records; {} for an empty file or one a killed run left half-written."""
    os.lseek(descriptor, 0, os.SEEK_SET)
    try:
        owner = json.loads(os.read(descriptor, 65536).decode())
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def acquire(path: str, name: str) -> None:
    """Take the lock at `path` for experiment `name`, or raise ExperimentInUseError naming the run
    that holds it. Released by release() or at exit."""
    if path in _held:
        return
    folder = ensure_folder(os.path.dirname(path))
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:  # a read-only mount, or a folder of another user
            raise OutputError(
                f'cannot write into folder {folder}: {error.strerror or error} (a training keeps its '
                f'lock file {os.path.basename(path)} and its experiment folder there)'
            ) from error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(descriptor)
            os.close(descriptor)
            raise _in_use(name, owner, path) from None
        try:
            same_file = os.path.samestat(os.fstat(descriptor), os.stat(path))
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(descriptor)  # the holder released (removed) the file between our open and flock
    owner = _read_owner(descriptor)
    try:
        _refuse_recorded_owner(owner, path, name)
    except ExperimentInUseError:
        os.close(descriptor)
        raise
    if owner:
        logger.warning(f'Took over the stale lock {path} of a run that no longer runs ({_describe(owner)}).')
    record = {
        'pid': os.getpid(),
        'host': socket.gethostname(),
        'started': _process_start(os.getpid()),
        'time': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
    }
    os.ftruncate(descriptor, 0)
    os.lseek(descriptor, 0, os.SEEK_SET)
    os.write(descriptor, json.dumps(record).encode())
    _held[path] = descriptor


def _refuse_recorded_owner(owner: Dict[str, Any], path: str, name: str) -> None:
    """A file we could flock still names its last owner when that one did not release it: killed
    (stale: taken over), or alive on another host or on a file system without working flock."""
    if not owner:
        return
    if owner.get('host') == socket.gethostname():
        if _owner_lives(owner):
            raise _in_use(name, owner, path)
        return
    raise ExperimentInUseError(
        f"experiment '{name}' is locked by a run on another host ({_describe(owner)}; "
        f'lock {path}); if that run has ended, delete the lock file'
    )


def release(path: str) -> None:
    """Remove the lock file and drop the lock (no-op when this process does not hold it)."""
    descriptor = _held.pop(path, None)
    if descriptor is None:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.close(descriptor)


def release_all() -> None:
    for path in list(_held):
        release(path)


atexit.register(release_all)


def lock_path(opt: Dict[str, Any]) -> str:
    """experiments/<name>.lock, beside the experiment folder (which BasicSR may rename)."""
    return f'{opt["path"]["experiments_root"].rstrip(os.sep)}.lock'


def hold_experiment(opt: Dict[str, Any]) -> None:
    """Rank 0 takes the experiment's lock for the whole run (torchrun ranks share it: the others do not
    lock); when it is refused, every rank raises the refusal, so no rank waits for a missing peer."""
    refusal: Optional[str] = None
    if opt.get('rank', 0) == 0:
        try:
            acquire(lock_path(opt), opt['name'])
        except ExperimentInUseError as error:
            refusal = str(error)
    if opt.get('dist') and torch.distributed.is_initialized():
        shared = [refusal]
        torch.distributed.broadcast_object_list(shared, src=0)
        refusal = shared[0]
    if refusal is not None:
        raise ExperimentInUseError(refusal)

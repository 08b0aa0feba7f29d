"""Where a training resumes: the newest training state that loads, one for every rank.

BasicSR lets each rank read its resume state from its own disk. On nodes without a shared
filesystem only the node of the old rank 0 has the states, and torchrun's c10d rendezvous hands out
ranks in arrival order, so the new rank 0 may run on a node that has none: the ranks would resume from
different iterations and their weights diverge. Here each rank finds its newest loadable state, the
ranks agree on the newest of all, and a rank that has it sends its files (training state and network
checkpoints) to the ranks that do not; these write them into their own experiment folder, so every
rank loads the same bytes and starts bit-identical.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from hat_basicsr.errors import CheckpointError, OutputError
from hat_basicsr.utils.files import atomic_write, ensure_folder

STATE_FILE = re.compile(r'(\d+)\.state')
logger = logging.getLogger('basicsr')
# Entries of opt['path'] that are no folders of the run (as BasicSR's make_exp_dirs skips them).
NOT_FOLDERS = ('strict_load', 'pretrain_network', 'resume', 'param_key')


def elastic_restart_count() -> int:
    """How often torchrun (--max-restarts) has restarted this worker group; 0 outside torchrun."""
    return int(os.environ.get('TORCHELASTIC_RESTART_COUNT', 0))


def load_state(path: str) -> Dict[str, Any]:
    """A BasicSR training state, loaded on the CPU without executing code; CheckpointError naming
    `path` when it cannot be read or is not a training state."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:
        raise CheckpointError(f'cannot load training state {path}: {type(error).__name__}: {error}') from error
    if not isinstance(state, dict) or not {'epoch', 'iter', 'optimizers', 'schedulers'} <= state.keys():
        raise CheckpointError(f'{path} is not a BasicSR training state (no epoch/iter/optimizers/schedulers)')
    return state


def state_iterations(state_dir: str) -> List[int]:
    """The iterations of the `<iter>.state` files in `state_dir`, newest first (none: no folder);
    other files (temporaries of a killed save, notes) are not states."""
    if not os.path.isdir(state_dir):
        return []
    return sorted(
        (int(match.group(1)) for match in map(STATE_FILE.fullmatch, os.listdir(state_dir)) if match), reverse=True
    )


def newest_loadable_state(state_dir: str) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
    """(path, state) of the newest `<iter>.state` in `state_dir` that loads, each one skipped named
    in a warning; (None, None) when there is none, a CheckpointError when none of them loads."""
    skipped = []
    for iteration in state_iterations(state_dir):
        path = os.path.join(state_dir, f'{iteration}.state')
        try:
            return path, load_state(path)
        except CheckpointError as error:
            logger.warning(f'{error}; resuming from an older training state instead.')
            skipped.append(path)
    if skipped:
        raise CheckpointError(
            f'no training state in {state_dir} loads ({len(skipped)} tried, newest '
            f'{skipped[0]}); move them away to start afresh'
        )
    return None, None


def newest_state_of_all_ranks(
    opt: Dict[str, Any], check_resume: Callable[[Dict[str, Any], int], None]
) -> Optional[Dict[str, Any]]:
    """The newest training state that loads on any rank, the same on every rank (None: no rank has
    one), with opt['path']['resume_state'] set to its local path and `check_resume` (BasicSR's,
    which points the pretrain_network_* paths at the networks saved with it) applied. Ranks that
    lack it receive its files from the lowest rank that has it."""
    state_dir = opt['path']['training_states']
    try:
        path, state = newest_loadable_state(state_dir)
        local: Tuple[Optional[int], Optional[str]] = (None if state is None else state['iter'], None)
    except CheckpointError as error:
        state, local = None, (None, str(error))
    found: List[Tuple[Optional[int], Optional[str]]] = [(None, None)] * opt['world_size']
    torch.distributed.all_gather_object(found, local)
    iterations = [iteration for iteration, _ in found if iteration is not None]
    if not iterations:
        errors = [error for _, error in found if error is not None]
        if errors:
            raise CheckpointError(errors[0])
        return None
    newest = max(iterations)
    opt['path']['resume_state'] = path if local[0] == newest else os.path.join(state_dir, f'{newest}.state')
    before = dict(opt['path'])
    check_resume(opt, newest)
    # The files of this resume point: the state and the networks check_resume points at.
    files = {
        key: value
        for key, value in opt['path'].items()
        if key == 'resume_state' or (key.startswith('pretrain_network_') and value != before.get(key))
    }
    lacking = [rank for rank, (iteration, _) in enumerate(found) if iteration != newest]
    if lacking:
        owner = next(rank for rank, (iteration, _) in enumerate(found) if iteration == newest)
        _send_files(opt, files, owner, receive=opt['rank'] in lacking)
        if opt['rank'] in lacking:
            state = load_state(opt['path']['resume_state'])
            print(
                f'Rank {opt["rank"]}: training state {newest} is not on this node; received it and its '
                f'networks from rank {owner}: {", ".join(files.values())}',
                flush=True,
            )
    return state


def _send_files(opt: Dict[str, Any], files: Dict[str, str], owner: int, receive: bool) -> None:
    """Broadcast the bytes of `files` (opt['path'] key -> local path) from rank `owner`; a receiving
    rank writes them (atomically) to its own paths of the same keys. A file the owner cannot read, or
    one a rank cannot write, raises the same error on every rank, so none waits for a peer that has
    stopped."""
    payload: List[Any] = [None]
    if opt['rank'] == owner:
        try:
            payload[0] = {key: _read_bytes(path) for key, path in files.items()}
        except CheckpointError as error:
            payload[0] = str(error)
    torch.distributed.broadcast_object_list(payload, src=owner)
    if isinstance(payload[0], str):
        raise CheckpointError(payload[0])
    failure = None
    if receive:
        try:
            for key, data in payload[0].items():
                atomic_write(files[key], lambda stream, data=data: stream.write(data))
        except OutputError as error:
            failure = f'rank {opt["rank"]}: {error}'
    # Also a barrier: nothing reads these files (rank 0 removes stale temporaries from their folders)
    # before every receiving rank of the node has written them, and a failed write stops all ranks.
    failures: List[Optional[str]] = [None] * opt['world_size']
    torch.distributed.all_gather_object(failures, failure)
    reported = [message for message in failures if message is not None]
    if reported:
        raise OutputError(reported[0])


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, 'rb') as file:
            return file.read()
    except OSError as error:
        raise CheckpointError(f'cannot read {path} to send it to the other ranks: {error.strerror or error}') from error


def keep_run_folders(opt: Dict[str, Any]) -> None:
    """Create the experiment folder and its sub-folders where missing, never renaming an existing
    one (what BasicSR's make_exp_dirs does for a fresh start: it archives the folder first)."""
    for key, path in opt['path'].items():
        if isinstance(path, str) and not any(word in key for word in NOT_FOLDERS):
            ensure_folder(path)

"""`logger.keep_checkpoints: N`: after a save, delete the numbered checkpoints beyond the newest N.

BasicSR keeps every `models/net_<label>_<iter>.pth` and `training_states/<iter>.state` (HAT-L: about
0.7 GB per save). A save is one *pair*: the network file(s) of an iteration and its state; a state
resumes only with its network files (BasicSR loads `net_g_<iter>.pth` for `<iter>.state`), so pairs
are kept or deleted together. Safe against a kill at any moment:

- pruning runs only after the new pair is completely written (both files are atomic renames), and
  that pair is always among those kept;
- an old pair is deleted state first, then its network files: a kill in between leaves a network
  file without a state (ignored by --auto_resume, deleted by the next pruning), never a state whose
  network is gone;
- files numbered above the newest save are left alone (another run's, e.g. an unreadable state that
  --auto_resume skipped); `net_g_latest.pth` is not numbered and never touched.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set, Union

from hat_basicsr.utils.resume_point import state_iterations

NETWORK_FILE = re.compile(r'(net_\w+)_(\d+)\.pth')


def _networks_by_iteration(models: Path) -> Dict[int, Dict[str, Path]]:
    found: Dict[int, Dict[str, Path]] = defaultdict(dict)
    for path in models.iterdir() if models.is_dir() else ():
        match = NETWORK_FILE.fullmatch(path.name)
        if match:
            found[int(match.group(2))][match.group(1)] = path
    return found


def _states_by_iteration(states: Path) -> Dict[int, Path]:
    return {iteration: states / f'{iteration}.state' for iteration in state_iterations(str(states))}


def prune_checkpoints(
    models_folder: Union[str, os.PathLike],
    states_folder: Union[str, os.PathLike],
    newest_iter: int,
    keep: int,
) -> List[Path]:
    """Delete the numbered files of iterations below `newest_iter` that are not among the `keep`
    newest complete pairs (a state and every network label the `newest_iter` save wrote); returns
    the deleted paths in deletion order. `newest_iter` must be a pair just written."""
    if keep < 1:
        raise ValueError(f'keep must be at least 1, got {keep}')
    networks = _networks_by_iteration(Path(models_folder))
    states = _states_by_iteration(Path(states_folder))
    labels: Set[str] = set(networks.get(newest_iter, {}))
    if newest_iter not in states or not labels:
        raise FileNotFoundError(f'no complete checkpoint of iteration {newest_iter} to keep')
    complete = sorted(
        (i for i in states if i <= newest_iter and labels <= set(networks.get(i, {}))),
        reverse=True,
    )
    kept = set(complete[:keep])
    deleted = []
    for iteration in sorted((set(states) | set(networks)) - kept):
        if iteration > newest_iter:
            continue
        doomed = ([states[iteration]] if iteration in states else []) + sorted(networks.get(iteration, {}).values())
        for path in doomed:
            path.unlink(missing_ok=True)
            deleted.append(path)
    return deleted

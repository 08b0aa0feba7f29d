"""How a training of this package starts and resumes: choices made on BasicSR's train_pipeline, not
fixes for today's stack (those are hat_basicsr.basicsr_compat's, applied on import). They take
effect only once install_training_policy() ran: hat_basicsr.train calls it, and a host BasicSR
repository calls it in its own train script, before train_pipeline.

- One run per experiment name: train_pipeline calls load_resume_state first after parsing the
  options and before it creates or archives the experiment folder, so that is where the run takes
  the experiment's lock (hat_basicsr.utils.run_lock); BasicSR lets two runs of one name destroy
  each other.
- --auto_resume looks in the run's own `training_states` folder (under root_path), not in
  `experiments/<name>` relative to the working directory (a run started elsewhere never resumed),
  and takes the newest state that loads, a warning naming each one skipped (BasicSR stops at an
  unreadable newest state, e.g. one truncated by a full disk or a copy, though older ones are there).
- Under torchrun each rank reads its own disk: on nodes without a shared filesystem the ranks
  would resume from different iterations (or some from none) and diverge. Auto-resume takes the
  newest state of all ranks, sent to the ranks that lack it (hat_basicsr.utils.resume_point).
- A worker group that torchrun restarted (--max-restarts) resumes as if --auto_resume was given:
  it would otherwise start over from iteration 0 and archive the run's folder.
- A resuming rank 0 creates the run's folders where missing (it may run on a node where that run
  never saved), and under --auto_resume an existing experiment folder is the run's own: kept, never
  archived.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Optional

from hat_basicsr import basicsr_compat


def _resume_policy(load_on_cpu: Callable) -> Callable:
    """load_resume_state choosing which state to resume (see the module docstring) after taking the
    experiment's lock; a state named by path.resume_state loads through the compat fix."""
    from hat_basicsr.utils.resume_point import (
        elastic_restart_count,
        keep_run_folders,
        newest_loadable_state,
        newest_state_of_all_ranks,
    )
    from hat_basicsr.utils.run_lock import hold_experiment

    from basicsr.utils import check_resume

    def load_resume_state(opt: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        hold_experiment(opt)
        restarts = elastic_restart_count()
        if restarts:
            opt['auto_resume'] = True
            if opt.get('rank', 0) == 0:
                print(f'torchrun restarted the workers (restart {restarts}): resuming from the newest training state')
        if not opt['auto_resume']:
            state = load_on_cpu(opt)
        elif opt.get('dist'):
            state = newest_state_of_all_ranks(opt, check_resume)
        else:
            opt['path']['resume_state'], state = newest_loadable_state(opt['path']['training_states'])
            if state is not None:
                check_resume(opt, state['iter'])
        if state is not None and opt.get('rank', 0) == 0:
            keep_run_folders(opt)
        return state

    return load_resume_state


def _keep_folders_on_auto_resume(original: Callable) -> Callable:
    """train_pipeline calls make_exp_dirs when it found no state to resume from, and it renames an
    existing experiment folder to `<name>_archived_<time>`. Under --auto_resume (also implied after
    a torchrun restart) that folder is the run's own: a group restarted before its first save, or
    a rank 0 on a node whose folder holds only logs, would archive it. There the folders are kept."""
    from hat_basicsr.utils.resume_point import keep_run_folders

    def make_exp_dirs(opt: Dict[str, Any]) -> None:
        if opt.get('is_train') and opt.get('auto_resume'):
            if opt.get('rank', 0) == 0:
                keep_run_folders(opt)
        else:
            original(opt)

    return make_exp_dirs


def install_training_policy() -> None:
    """Install the policy on basicsr.train (idempotent); call it before train_pipeline."""
    basicsr_compat.apply()
    train = importlib.import_module('basicsr.train')
    basicsr_compat.patch_once(train, 'load_resume_state', _resume_policy)
    basicsr_compat.patch_once(train, 'make_exp_dirs', _keep_folders_on_auto_resume)

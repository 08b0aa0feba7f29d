"""Train with BasicSR's own pipeline and HAT registered; outputs (experiments/, tb_logger/) go
under the current working directory.

    python -m hat_basicsr.train -opt options/train/X.yml [--auto_resume] [--debug]
    torchrun --nproc_per_node=N -m hat_basicsr.train -opt X.yml --launcher pytorch

A training holds its experiment's lock while it runs and resumes as hat_basicsr.training_policy
says. SIGTERM saves a training state at the next iteration boundary and exits with status 143,
Ctrl-C exits with 130, each with one line (hat_basicsr.utils.training_stop).
"""

import contextlib
import os
import sys
from typing import Any, Callable, List, Optional

if __name__ == '__main__' and not __package__:
    # `python hat_basicsr/train.py`: put the repository root first instead of this folder, whose
    # sub-packages (data, models, utils) would otherwise shadow top-level modules of those names.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import hat_basicsr  # noqa: E402,F401  (registers HAT into BasicSR and applies the compatibility fixes)
from hat_basicsr.errors import TrainingStopped
from hat_basicsr.option_check import precheck_option_file  # noqa: E402
from hat_basicsr.training_policy import install_training_policy  # noqa: E402
from hat_basicsr.utils import run_lock  # noqa: E402
from hat_basicsr.utils.training_stop import (  # noqa: E402
    SIGINT_EXIT_STATUS,
    SIGTERM_EXIT_STATUS,
    interrupted_message,
    stop_on_sigterm,
)
from hat_basicsr.utils.user_errors import user_error_message  # noqa: E402

LEGACY_LAUNCHER = (
    '{prog}: error: got --local-rank, which `python -m torch.distributed.launch` passes; '
    'that launcher is deprecated and BasicSR does not accept the argument. Use torchrun:\n'
    '  torchrun --nproc_per_node=NUM_GPUS -m {prog} -opt OPTIONS.yml --launcher pytorch'
)


def run_pipeline(
    pipeline: Callable[[str], Any], prog: str, argv: Optional[List[str]] = None, is_train: bool = True
) -> None:
    """Run a BasicSR pipeline (which parses sys.argv itself) on `argv` with the current directory
    as root_path, after checking the option file for what BasicSR would silently misread. Option,
    data and checkpoint errors (bad values or types, missing keys, registry names or files, corrupt
    YAML, images or checkpoints) end the process with their message instead of a traceback, and
    so do a training's SIGTERM stop and a Ctrl-C (exit statuses 143 and 130)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if any(arg.split('=')[0] == '--local-rank' for arg in args):
        sys.exit(LEGACY_LAUNCHER.format(prog=prog))
    saved_argv, sys.argv = sys.argv, [prog] + args
    try:
        with stop_on_sigterm() if is_train else contextlib.nullcontext():
            precheck_option_file(args, prog, is_train)
            pipeline(os.getcwd())
    except KeyboardInterrupt:
        print(f'{prog}: {interrupted_message() if is_train else "interrupted"}', file=sys.stderr)
        sys.exit(SIGINT_EXIT_STATUS)
    except TrainingStopped as stop:
        print(f'{prog}: {stop}', file=sys.stderr)
        sys.exit(SIGTERM_EXIT_STATUS)
    except Exception as error:
        message = user_error_message(error)
        if message is None or os.environ.get('HAT_BASICSR_TRACEBACK'):
            raise
        sys.exit(f'{prog}: error: {message}')
    finally:
        sys.argv = saved_argv
        run_lock.release_all()


def main(argv: Optional[List[str]] = None) -> None:
    """basicsr.train.train_pipeline on `argv` (default: the command line), with this package's
    training policy installed (hat_basicsr.training_policy)."""
    install_training_policy()
    from basicsr.train import train_pipeline

    run_pipeline(train_pipeline, 'hat_basicsr.train', argv)


if __name__ == '__main__':
    main()

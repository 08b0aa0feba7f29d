"""Train with BasicSR's own pipeline and HAT registered; outputs (experiments/, tb_logger/) go
under the current working directory.

    python -m hat_basicsr.train -opt options/train/X.yml [--auto_resume] [--debug]
    torchrun --nproc_per_node=N -m hat_basicsr.train -opt X.yml --launcher pytorch
"""
import os
import sys
from typing import Any, Callable, List, Optional

if __name__ == '__main__' and not __package__:
    # `python hat_basicsr/train.py`: put the repository root first instead of this folder, whose
    # sub-packages (data, models, utils) would otherwise shadow top-level modules of those names.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import yaml  # noqa: E402

import hat_basicsr  # noqa: E402,F401  (registers HAT into BasicSR and applies the compatibility fixes)

LEGACY_LAUNCHER = ('{prog}: error: got --local-rank, which `python -m torch.distributed.launch` passes; '
                   'that launcher is deprecated and BasicSR does not accept the argument. Use torchrun:\n'
                   '  torchrun --nproc_per_node=NUM_GPUS -m {prog} -opt OPTIONS.yml --launcher pytorch')


def run_pipeline(pipeline: Callable[[str], Any], prog: str, argv: Optional[List[str]] = None) -> None:
    """Run a BasicSR pipeline (which parses sys.argv itself) on `argv` with the current directory
    as root_path. Option and checkpoint errors (bad values, missing keys or registry names, missing
    files, corrupt YAML or checkpoints) end the process with their message instead of a traceback."""
    args = sys.argv[1:] if argv is None else list(argv)
    if any(arg.split('=')[0] == '--local-rank' for arg in args):
        sys.exit(LEGACY_LAUNCHER.format(prog=prog))
    saved_argv, sys.argv = sys.argv, [prog] + args
    try:
        pipeline(os.getcwd())
    except (ValueError, KeyError, FileNotFoundError, yaml.YAMLError) as error:
        sys.exit(f'{prog}: error: {type(error).__name__}: {error}')
    finally:
        sys.argv = saved_argv


def main(argv: Optional[List[str]] = None) -> None:
    """basicsr.train.train_pipeline on `argv` (default: the command line)."""
    from basicsr.train import train_pipeline
    run_pipeline(train_pipeline, 'hat_basicsr.train', argv)


if __name__ == '__main__':
    main()

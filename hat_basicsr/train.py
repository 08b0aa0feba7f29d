"""Train with BasicSR's own pipeline and HAT registered; outputs (experiments/, tb_logger/) go
under the current working directory.

    python -m hat_basicsr.train -opt options/train/X.yml [--auto_resume] [--debug]
    torchrun --nproc_per_node=N -m hat_basicsr.train -opt X.yml --launcher pytorch
"""
import os
import sys
from typing import Any, Callable, List, Optional, Sequence

if __name__ == '__main__' and not __package__:
    # `python hat_basicsr/train.py`: put the repository root first instead of this folder, whose
    # sub-packages (data, models, utils) would otherwise shadow top-level modules of those names.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import yaml  # noqa: E402

import hat_basicsr  # noqa: E402,F401  (registers HAT into BasicSR and applies the compatibility fixes)
from hat_basicsr.data.imagenet_paired_dataset import CorruptImageError  # noqa: E402
from hat_basicsr.utils.option_check import check_options  # noqa: E402

LEGACY_LAUNCHER = ('{prog}: error: got --local-rank, which `python -m torch.distributed.launch` passes; '
                   'that launcher is deprecated and BasicSR does not accept the argument. Use torchrun:\n'
                   '  torchrun --nproc_per_node=NUM_GPUS -m {prog} -opt OPTIONS.yml --launcher pytorch')
# What bad options, data or checkpoints raise from inside BasicSR (a string where a number belongs:
# TypeError; a missing file in a dataset: AssertionError; ...). Reported in one line; set
# HAT_BASICSR_TRACEBACK=1 to get the traceback instead.
USER_ERRORS = (ValueError, KeyError, TypeError, AssertionError, ZeroDivisionError, OSError, yaml.YAMLError,
               CorruptImageError)


def option_file_argument(args: Sequence[str]) -> Optional[str]:
    """The value of BasicSR's -opt argument, if given."""
    for index, arg in enumerate(args):
        if arg == '-opt' and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith('-opt='):
            return arg.split('=', 1)[1]
    return None


def precheck_option_file(args: Sequence[str], prog: str, is_train: bool) -> None:
    """check_options on the -opt file (an unreadable file is left to BasicSR to report)."""
    from basicsr.utils.options import ordered_yaml
    path = option_file_argument(args)
    try:
        with open(path, encoding='utf-8') as stream:
            opt = yaml.load(stream, Loader=ordered_yaml()[0])
    except (TypeError, OSError, yaml.YAMLError):
        return
    if isinstance(opt, dict):
        for warning in check_options(opt, path, is_train):
            print(f'{prog}: warning: {warning}', file=sys.stderr)


def error_summary(error: BaseException) -> str:
    """The message, without the worker traceback that DataLoader puts into re-raised exceptions."""
    message = str(error)
    if 'Original Traceback' in message:
        message = message.strip().splitlines()[-1].removeprefix(f'{type(error).__name__}: ')
    return message


def run_pipeline(pipeline: Callable[[str], Any], prog: str, argv: Optional[List[str]] = None,
                 is_train: bool = True) -> None:
    """Run a BasicSR pipeline (which parses sys.argv itself) on `argv` with the current directory
    as root_path, after checking the option file for what BasicSR would silently misread. Option,
    data and checkpoint errors (bad values or types, missing keys, registry names or files, corrupt
    YAML, images or checkpoints) end the process with their message instead of a traceback."""
    args = sys.argv[1:] if argv is None else list(argv)
    if any(arg.split('=')[0] == '--local-rank' for arg in args):
        sys.exit(LEGACY_LAUNCHER.format(prog=prog))
    saved_argv, sys.argv = sys.argv, [prog] + args
    try:
        precheck_option_file(args, prog, is_train)
        pipeline(os.getcwd())
    except USER_ERRORS as error:
        if os.environ.get('HAT_BASICSR_TRACEBACK'):
            raise
        sys.exit(f'{prog}: error: {type(error).__name__}: {error_summary(error)}')
    finally:
        sys.argv = saved_argv


def main(argv: Optional[List[str]] = None) -> None:
    """basicsr.train.train_pipeline on `argv` (default: the command line)."""
    from basicsr.train import train_pipeline
    run_pipeline(train_pipeline, 'hat_basicsr.train', argv)


if __name__ == '__main__':
    main()

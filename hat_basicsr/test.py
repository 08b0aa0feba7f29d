"""Test with BasicSR's own pipeline and HAT registered; results/ goes under the current working
directory.

    python -m hat_basicsr.test -opt options/test/X.yml
"""

import os
import sys
from typing import List, Optional

if __name__ == '__main__' and not __package__:
    # `python hat_basicsr/test.py`: the repository root instead of this folder (see train.py).
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from hat_basicsr.train import run_pipeline  # noqa: E402


def main(argv: Optional[List[str]] = None) -> None:
    """basicsr.test.test_pipeline on `argv` (default: the command line)."""
    from basicsr.test import test_pipeline

    run_pipeline(test_pipeline, 'hat_basicsr.test', argv, is_train=False)


if __name__ == '__main__':
    main()

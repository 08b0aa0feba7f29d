"""Ending a training between iterations, and what the entry point says when it ends early.

SIGTERM, which cluster schedulers send before they preempt a job, only asks for a stop: HATModel
sees the request at the next iteration boundary, saves a training state for the iteration just
finished and raises TrainingStopped, so a resumed run loses at most the iteration in progress. The
model also records its progress here, for the messages of a stop, a Ctrl-C and a diverged run.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Iterator, Optional

# Exit statuses of a training ended by a signal: the shell's 128 + signal number, which tells a
# stopped run from a finished one (0) and from a failed one (1).
SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM
SIGINT_EXIT_STATUS = 128 + signal.SIGINT


@dataclass
class TrainingProgress:
    """Where the training of this process is: the iteration started last, the iteration of the
    newest training state written (None: none yet) and the newest epoch BasicSR reported."""

    iteration: int = 0
    saved_iteration: Optional[int] = None
    epoch: int = 0
    stop_requested: bool = False

    def reset(self) -> None:
        for field in fields(self):
            setattr(self, field.name, field.default)


progress = TrainingProgress()


def _request_stop(_signum: int, _frame: object) -> None:
    progress.stop_requested = True


@contextmanager
def stop_on_sigterm() -> Iterator[TrainingProgress]:
    """Fresh progress, and SIGTERM turned into a stop request while the block runs."""
    progress.reset()
    previous = signal.signal(signal.SIGTERM, _request_stop)
    try:
        yield progress
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_message() -> str:
    """The one line for a Ctrl-C during training."""
    if progress.iteration == 0:
        return 'interrupted before the first iteration'
    saved = 'none yet' if progress.saved_iteration is None else f'iteration {progress.saved_iteration}'
    return f'interrupted at iteration {progress.iteration} (newest training state: {saved}); resume with --auto_resume'

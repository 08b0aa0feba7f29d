"""Every exception class of hat_basicsr, in one module that imports nothing of the package.

The user's errors (options, data, checkpoints, output folders, images) carry a message that names
the option path, file or value and what is expected; the train/test entry points and the CLI
report them in one line (see hat_basicsr.utils.user_errors). Every class derives from UserError, so
an entry point catches the user's mistakes once and lets anything else (a bug) keep its traceback;
the one exception is TrainingStopped, a control-flow signal. The built-in bases are part of the API
too: callers catch ValueError, OSError and so on.
"""


class UserError(Exception):
    """The root of the errors that are the user's to fix; the message names the option, file or value."""


class OptionFileError(UserError, ValueError):
    """An option file entry, or value, that BasicSR or HATModel would misread or cannot use; the
    message names it."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read or holds no recognisable weights."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose keys or shapes do not fit the model."""


class OutputError(UserError, ValueError):
    """A file or folder that cannot be written; the message names it."""


class DatasetError(UserError, ValueError):
    """Options or an image the dataset cannot use; the message names the option or the file."""


class MissingVGGWeightsError(UserError, FileNotFoundError):
    """The perceptual loss needs ImageNet VGG19 weights that are not on this machine."""


class ExperimentInUseError(UserError, OSError):
    """Another training holds the experiment folder; the message names it."""


class TrainingStopped(Exception):
    """A stop requested by SIGTERM, raised at an iteration boundary after the state was saved. A
    control-flow signal, not a UserError: hat_basicsr.train turns it into exit status 143."""


class NonFiniteTrainingError(UserError, ValueError):
    """A loss or weights became NaN or infinite; raised before anything non-finite is saved."""


class RegistryClashError(UserError, RuntimeError):
    """A different object (the host repository's own) already holds the name hat_basicsr registers;
    the message says how to rename it."""


class SourceError(UserError, ValueError):
    """A model source (option file or checkpoint) that cannot give a model."""


class ImageError(UserError, ValueError):
    """An image that cannot be read, decoded or written; the message names the file."""


class BoxError(UserError, ValueError):
    """The target box cannot be analysed: it does not fit the SR output, or nothing is attributed."""


class OnnxError(UserError, ValueError):
    """An export that cannot be done, or an ONNX file that cannot be run; the message says why."""


class HATArgumentError(UserError, ValueError):
    """A HAT constructor argument (from an option file or from code) that HAT cannot be built with.
    `argument` names it, so the option checker reports `network_g.<argument>`; `why` says what is
    wrong with it."""

    def __init__(self, argument: str, why: str) -> None:
        super().__init__(argument, why)
        self.argument = argument
        self.why = why

    def __str__(self) -> str:
        return f'HAT: invalid {self.argument}: {self.why}'

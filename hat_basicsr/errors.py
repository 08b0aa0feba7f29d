"""Every exception class of hat_basicsr, in one module that imports nothing of the package.

The user's errors (options, data, checkpoints, output folders, images) carry a message that names
the option path, file or value and what is expected; the train/test entry points and the CLI
report them in one line (see hat_basicsr.utils.user_errors). Base classes are part of the API:
callers catch ValueError, OSError and so on.
"""


class OptionError(ValueError):
    """An option file value HATModel cannot use."""


class OptionFileError(ValueError):
    """An option file entry that BasicSR would misread or cannot use; the message names it."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or holds no recognisable weights."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose keys or shapes do not fit the model."""


class OutputError(ValueError):
    """A file or folder that cannot be written; the message names it."""


class CorruptImageError(RuntimeError):
    """An image could not be read or decoded; the message names the file."""


class DatasetError(ValueError):
    """Options or an image the dataset cannot use; the message names the option or the file."""


class MissingVGGWeightsError(FileNotFoundError):
    """The perceptual loss needs ImageNet VGG19 weights that are not on this machine."""


class ExperimentInUseError(OSError):
    """Another training holds the experiment folder; the message names it."""


class TrainingStopped(Exception):
    """A stop requested by SIGTERM, raised at an iteration boundary after the state was saved."""


class NonFiniteTrainingError(ValueError):
    """A loss or weights became NaN or infinite; raised before anything non-finite is saved."""


class RegistryClashError(RuntimeError):
    """A different object already holds the name hat_basicsr registers."""


class SourceError(ValueError):
    """A model source (option file or checkpoint) that cannot give a model."""


class ImageError(ValueError):
    """An image that cannot be read or written; the message names the file."""


class BoxError(ValueError):
    """The target box cannot be analysed: it does not fit the SR output, or nothing is attributed."""


class OnnxError(ValueError):
    """An export that cannot be done, or an ONNX file that cannot be run; the message says why."""

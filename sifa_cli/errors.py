"""One exception family for everything a user can get wrong.

Commands catch `SifaError` and print its message as one line with a non-zero exit code;
anything else is a bug and keeps its traceback.
"""


class SifaError(Exception):
    """A user-facing error: the message is one clear line."""

    exit_code = 1


class InputError(SifaError):
    """A path, option or value the user gave is unusable."""

    exit_code = 2


class DecodeError(SifaError):
    """A video file could not be read (missing, empty, corrupt, unsupported)."""


class WeightsError(SifaError):
    """Weights could not be found, downloaded, verified or loaded."""


class ModelError(SifaError):
    """A model name, configuration or input shape is not supported."""

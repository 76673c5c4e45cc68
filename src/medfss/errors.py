"""User-facing errors.

Every mistake a user can make (a missing file, a corrupt volume, a wrong label
map, an unknown model name) raises a subclass of :class:`MedfssError` with a
one-line message that names the culprit and, where possible, the fix. The CLI
prints that line and exits non-zero; it never shows a traceback for them.
"""


def one_line(exc: BaseException) -> str:
    """``"TypeName: message"`` of a library's exception, on one line (for wrapping it in a MedfssError)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class MedfssError(Exception):
    """Base class for errors caused by user input rather than by a bug."""

    exit_status = 2  # what the CLI exits with after printing the message


class InputFileError(MedfssError):
    """A file is missing, unreadable, truncated or holds invalid values."""


class LabelMapError(MedfssError):
    """Labels in a volume do not match the declared label map."""


class ConfigError(MedfssError, ValueError):
    """An option, config value or name is invalid.

    Also a ``ValueError``: building a settings dataclass with a bad value in
    code is the classic case of one.
    """


class TrainingError(MedfssError):
    """Training cannot go on (a non-finite loss); the message names the step and what to change."""


class TrainingInterrupted(TrainingError):
    """SIGINT or SIGTERM stopped training after a checkpoint was saved; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + signum  # the shell's convention for death by a signal

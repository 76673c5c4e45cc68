"""User-facing errors.

Every mistake a user can make (a missing file, a corrupt volume, a wrong label
map, an unknown model name) raises a subclass of :class:`MedfssError` with a
one-line message that names the culprit and, where possible, the fix. The CLI
prints that line and exits non-zero; it never shows a traceback for them.
"""


class MedfssError(Exception):
    """Base class for errors caused by user input rather than by a bug."""


class InputFileError(MedfssError):
    """A file is missing, unreadable, truncated or holds invalid values."""


class LabelMapError(MedfssError):
    """Labels in a volume do not match the declared label map."""


class ConfigError(MedfssError, ValueError):
    """An option, config value or name is invalid.

    Also a ``ValueError``: building a settings dataclass with a bad value in
    code is the classic case of one.
    """

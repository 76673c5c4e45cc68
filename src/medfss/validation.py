"""Checks of settings, written once for every frozen config dataclass's ``__post_init__``.

The project's configuration convention: every group of settings a user can
change is a frozen dataclass named ``...Config`` with its defaults on its
fields (one place per default), checked in ``__post_init__`` with the
functions below. (``...Spec`` names the fixed description of a data set or a
public release, e.g. :class:`~medfss.data.datasets.DatasetSpec`: facts, not
settings.) Each raises
:class:`~medfss.errors.ConfigError` (a ``ValueError`` too, for library
callers) with one line naming the field, the rule, an optional hint on the
fix and the value given. Booleans are not numbers here: YAML ``true`` where a
count or a weight is expected is a mistake.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from medfss.errors import ConfigError


def require(ok: bool, key: str, message: str) -> None:
    """Raise ``ConfigError("{key} {message}")`` unless ``ok``: for rules the checks below do not cover."""
    if not ok:
        raise ConfigError(f"{key} {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check(settings: Any, names: Iterable[str], ok: Callable[[Any], bool], rule: str, hint: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if not ok(value):
            raise ConfigError(f"{name} must be {rule}{f' ({hint})' if hint else ''}, got {value!r}")


def check_positive_int(settings: Any, *names: str, hint: str = "", optional: bool = False) -> None:
    """Each field is an integer >= 1 (or None where ``optional``)."""
    _check(settings, names, lambda v: (optional and v is None) or _is_positive_int(v),
           "a positive integer or None" if optional else "a positive integer", hint)


def check_positive_number(settings: Any, *names: str, hint: str = "") -> None:
    """Each field is a number > 0."""
    _check(settings, names, lambda v: _is_number(v) and v > 0, "a positive number", hint)


def check_non_negative_number(settings: Any, *names: str, hint: str = "") -> None:
    """Each field is a number >= 0."""
    _check(settings, names, lambda v: _is_number(v) and v >= 0, ">= 0", hint)


def check_non_negative_int(settings: Any, *names: str, hint: str = "") -> None:
    """Each field is an integer >= 0."""
    _check(settings, names, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
           "an integer >= 0", hint)


def check_fraction(settings: Any, *names: str, hint: str = "") -> None:
    """Each field is a number in (0, 1]."""
    _check(settings, names, lambda v: _is_number(v) and 0 < v <= 1, "in (0, 1]", hint)


def check_bool(settings: Any, *names: str, hint: str = "") -> None:
    """Each field is ``True`` or ``False`` (not 0, 1 or a string)."""
    _check(settings, names, lambda v: isinstance(v, bool), "true or false", hint)


def check_choice(settings: Any, name: str, choices: Iterable[str], hint: str = "") -> None:
    """The field is one of ``choices``."""
    choices = tuple(choices)
    _check(settings, [name], lambda v: v in choices, f"one of {', '.join(choices)}", hint)

"""Checks of model settings, written once for every settings dataclass's ``__post_init__``.

Each check takes the settings object and the names of its fields to check,
and raises ``ValueError`` with one line naming the field, the rule, an
optional hint on the fix and the value given (the registry turns it into a
:class:`~medfss.errors.ConfigError`). Booleans are not numbers here: YAML
``true`` where a count or a weight is expected is a mistake.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check(settings: Any, names: Iterable[str], ok: Callable[[Any], bool], rule: str, hint: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if not ok(value):
            raise ValueError(f"{name} must be {rule}{f' ({hint})' if hint else ''}, got {value!r}")


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

"""Argument checks at the library's boundary: one line each, raised before any work starts.

Every public function and CLI flag checks what it is given with these helpers, so that bad input gets a
``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, wrong value) whose message names the
argument, shows the value and says how to fix it. The command line turns both into ``exit 2`` with the
message on one line.

    >>> integer(2.5, "epochs")
    Traceback (most recent call last):
    TypeError: epochs must be an integer, got 2.5 (float); e.g. epochs=3
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

__all__ = ["boolean", "choice", "integer", "number", "optional_integer"]


def _kind(value) -> str:
    return type(value).__name__


def _hint(hint: str) -> str:
    return f"; {hint}" if hint else ""


def integer(value, name: str, *, minimum: int | None = 1, maximum: int | None = None, hint: str = "") -> int:
    """``value`` as an ``int`` within ``[minimum, maximum]`` (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        example = f"{name}={max(minimum or 0, 1)}" if minimum is not None else f"{name}=1"
        hint = hint or f"e.g. {example}"
        raise TypeError(f"{name} must be an integer, got {value!r} ({_kind(value)}){_hint(hint)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}{_hint(hint)}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}{_hint(hint)}")
    return value


def optional_integer(value, name: str, **kwargs) -> int | None:
    """``None``, or :func:`integer` of ``value``."""
    return None if value is None else integer(value, name, **kwargs)


def number(value, name: str, *, minimum: float | None = None, maximum: float | None = None,
           min_open: bool = False, max_open: bool = False, hint: str = "") -> float:
    """``value`` as a finite ``float`` within the given bounds (``*_open``: the bound itself is excluded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({_kind(value)}){_hint(hint)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}{_hint(hint)}")
    if minimum is not None and (value < minimum or (min_open and value == minimum)):
        op = ">" if min_open else ">="
        raise ValueError(f"{name} must be {op} {minimum:g}, got {value:g}{_hint(hint)}")
    if maximum is not None and (value > maximum or (max_open and value == maximum)):
        op = "<" if max_open else "<="
        raise ValueError(f"{name} must be {op} {maximum:g}, got {value:g}{_hint(hint)}")
    return value


def boolean(value, name: str) -> bool:
    """``value`` if it is a ``bool`` (``1`` or ``'yes'`` are refused: they hide typos like ``'maybe'``)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({_kind(value)})")
    return value


def choice(value, name: str, choices: Iterable):
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value

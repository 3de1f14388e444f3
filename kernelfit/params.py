"""Checks of user-given settings, written once: a whole number, a finite real, one of a set.

Every config and option class validates its fields through these, so "an
integer" means the same everywhere: NumPy integers count, ``True`` does not
(Python makes bool an int, and ``n_train=True`` is never meant as 1), and a
float such as 2.0 is refused (``int(2.5)`` would silently run something else).
Each failure is an :class:`~kernelfit.errors.InputError` naming the setting,
the values it takes and what it got.
"""

from __future__ import annotations

import math
import numbers

from .errors import InputError


def is_whole(v) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
    """A real number (Python or NumPy, integers included), not a bool; maybe not finite."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _tail(allow_none: bool, hint: str) -> str:
    return (" or None" if allow_none else "") + (f" ({hint})" if hint else "")


def whole(name: str, v, low: int | None = 0, *, high: int | None = None,
          allow_none: bool = False, hint: str = ""):
    """``v`` as an int in [low, high] (either bound may be None), or None when allowed."""
    if v is None and allow_none:
        return None
    if not (is_whole(v) and (low is None or v >= low) and (high is None or v <= high)):
        bounds = " and ".join(b for b in (f">= {low}" if low is not None else "",
                                          f"<= {high}" if high is not None else "") if b)
        raise InputError(f"{name} must be an integer{' ' + bounds if bounds else ''}"
                         f"{_tail(allow_none, hint)}, got {v!r}")
    return int(v)


def real(name: str, v, lo: float | None = None, hi: float | None = None, *,
         lo_open: bool = False, hi_open: bool = False, allow_none: bool = False,
         hint: str = ""):
    """``v`` as a finite float within the bounds (open or closed), or None when allowed."""
    if v is None and allow_none:
        return None
    ok = is_real(v) and math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        what = "a finite number"
        if lo == 0 and lo_open and hi is None:
            what, lo = "a positive finite number", None
        if lo is not None and hi is not None:
            where = f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        elif lo is not None:
            where = f" {'>' if lo_open else '>='} {lo:g}"
        elif hi is not None:
            where = f" {'<' if hi_open else '<='} {hi:g}"
        else:
            where = ""
        raise InputError(f"{name} must be {what}{where}{_tail(allow_none, hint)}, "
                         f"got {v!r}")
    return float(v)


def one_of(name: str, v, choices):
    """``v`` if it is one of ``choices`` (compared by value), else a list of them."""
    if isinstance(v, bool) or v not in tuple(choices):
        raise InputError(f"{name} must be one of {', '.join(map(repr, choices))}, got {v!r}")
    return v

"""Checks of user-given settings, written once: a whole number, a real, one of a set, a folder.

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
import os
from pathlib import Path

from kernelfit.errors import InputError


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


# Kernel pseudo-file-systems: a path there names no storage (files appear and vanish
# with processes), so kernelfit never keeps a cache or a scratch file in them.
_PSEUDO_FS = (Path("/proc"), Path("/sys"))


def folder(name: str, v, *, example: str) -> Path:
    """``v`` (str or path, ``~`` expanded) as a folder that exists or can be created.

    Not created here (only checked): it must not be a file, nor under ``/proc`` or
    ``/sys``, and where it is missing its nearest existing parent must be a
    writable folder. ``example`` is a path the message suggests instead.
    """
    if not isinstance(v, (str, os.PathLike)) or not str(v):
        raise InputError(f"{name} must be a folder path, got {v!r}")
    path = Path(v).expanduser()
    real_path = Path(os.path.realpath(path))
    pseudo = next((fs for fs in _PSEUDO_FS if real_path == fs or fs in real_path.parents), None)
    if pseudo is not None:
        raise InputError(f"{name} {str(v)!r} is under {pseudo}, a kernel pseudo-file-system "
                         f"that stores nothing; give a folder on a disk, e.g. {example}")
    if real_path.exists():
        if not real_path.is_dir():
            raise InputError(f"{name} {str(v)!r} is a file, not a folder; give a folder "
                             f"(created when missing), e.g. {example}")
        return path
    parent = next(p for p in real_path.parents if p.exists())
    if not parent.is_dir():
        raise InputError(f"{name} {str(v)!r} cannot be created: {parent} is a file; give a "
                         f"folder path, e.g. {example}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{name} {str(v)!r} does not exist and cannot be created in "
                         f"{parent} (no write permission); create it, or give a writable "
                         f"folder, e.g. {example}")
    return path

"""How values are written: sizes for people, records for JSON; and the one reader of .npy headers.

One definition of each, so that every message says "40.0 MB" the same way,
every record file is strict JSON (no ``NaN`` / ``Infinity`` tokens, which
Python writes by default and most other JSON readers refuse), and every .npy
header kernelfit reads from a file it did not just write fails the same way.
"""

from __future__ import annotations

import math
from tokenize import TokenError

import numpy as np


def human_bytes(b: float) -> str:
    """A byte count in the unit that shows it: ``1234567`` -> ``"1.2 MB"`` (never "0.0 GB")."""
    b = float(b)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(b) >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b:.0f} B"


def jsonable(obj):
    """``obj`` with NumPy scalars and arrays, tuples and non-string keys made JSON types.

    A non-finite float becomes its text (``"nan"``, ``"inf"``, ``"-inf"``):
    ``float()`` reads it back, and the file stays strict JSON.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def read_npy_header(fh) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy stream ``fh``, left at the first data byte.

    Format 1.0 and 2.0 only (what NumPy writes for numeric arrays). Raises
    ValueError for anything else, damaged header text included: NumPy parses
    that text as a Python literal (never run), and damaged text fails there
    with a SyntaxError or a TokenError, which callers would otherwise miss.
    """
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            return fmt.read_array_header_1_0(fh)
        if version == (2, 0):
            return fmt.read_array_header_2_0(fh)
    except (ValueError, SyntaxError, TokenError, TypeError) as err:
        raise ValueError(f"not a .npy array ({err})") from None
    raise ValueError(f".npy format version {version[0]}.{version[1]}; kernelfit reads 1.0 "
                     "and 2.0 (what numpy.save writes for numeric arrays)")

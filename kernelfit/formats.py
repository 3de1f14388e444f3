"""How values are written: sizes for people, and records for JSON.

One definition of each, so that every message says "40.0 MB" the same way and
every record file is strict JSON (no ``NaN`` / ``Infinity`` tokens, which
Python writes by default and most other JSON readers refuse).
"""

from __future__ import annotations

import math

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

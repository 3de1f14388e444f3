"""Norms and scalings that neither overflow nor underflow.

A sum of squares overflows long before the norm it gives does: targets near
1e300 have a representable norm, but their squares are inf (and entries near
1e-170 square to 0). LAPACK's nrm2 divides by the largest magnitude before
squaring; here the divisor is a power of two, so the division is exact and a
norm of ordinary numbers keeps every bit it had without the scaling.

The same powers of two let a solve work on targets of any magnitude: every
solve here is linear in Y column by column, so solving for Y / s and
multiplying by s gives the same bits (barring over- and underflow, which is
what the scaling avoids), also through a float32 K whose range ends at 3e38.
"""

from __future__ import annotations

import numpy as np


def pow2_scale(A, axis=None):
    """Powers of two near A's largest magnitude (over ``axis``); 1 where it is 0 or not finite.

    ``A / s`` then has its largest magnitude in [0.5, 1), exactly (in [1, 2) above
    2^1023, whose next power of two float64 does not hold).
    """
    A = np.asarray(A, dtype=np.float64)
    m = np.max(np.abs(A), axis=axis, initial=0.0)
    ok = np.isfinite(m) & (m > 0)
    _, e = np.frexp(np.where(ok, m, 1.0))
    return np.where(ok, np.ldexp(1.0, np.minimum(e, 1023)), 1.0)


def column_scale(A) -> np.ndarray:
    """One power of two per column of a 2-D A (the columns of a block solve are independent)."""
    return pow2_scale(A, axis=0)


def scaled_norm(A, axis=None):
    """The Euclidean (Frobenius, or per column with ``axis=0``) norm without over- or underflow."""
    A = np.asarray(A, dtype=np.float64)
    s = pow2_scale(A, axis=axis)
    scaled = A / (s if axis is None else np.expand_dims(s, axis))
    with np.errstate(over="ignore"):        # a norm beyond float64's range is inf, as it should be
        return np.linalg.norm(scaled, axis=axis) * s

"""Mixed-precision iterative refinement.

The factor is float32 (it is what fits in memory); residuals are float64
against an operator (the stored K, or the exact K recomputed from data), and
each correction reuses the cheap float32 factor. Converges while
cond(K) * eps_float32 < 1; the history shows whether it did.
"""

from __future__ import annotations

import numpy as np


def relative_norm(R, Y) -> float:
    """||R||_F / ||Y||_F, or ||R||_F when Y is all zeros (the ratio is then undefined).

    For an all-zero Y the exact solution is 0, and the absolute residual says
    how far from it a solve landed.
    """
    ynorm = float(np.linalg.norm(Y))
    rnorm = float(np.linalg.norm(R))
    return rnorm / ynorm if ynorm > 0 else rnorm


def relative_residual(op, X, Y) -> float:
    """||op @ X - Y||_F / ||Y||_F (absolute when Y = 0, see :func:`relative_norm`)."""
    Y = np.asarray(Y, dtype=np.float64)
    return relative_norm(op @ X - Y, Y)


def refine(solve, op, Y, X, steps: int):
    """Improve X for op X = Y with ``steps`` corrections X += solve(Y - op X).

    Returns
    -------
    X : ndarray, refined (float64)
    history : list of float
        Relative residual before each step (the caller computes the final one
        together with whatever else needs ``op @ X``).
    """
    Y = np.asarray(Y, dtype=np.float64)
    X = np.array(X, dtype=np.float64)
    history = []
    for _ in range(steps):
        R = Y - op @ X
        history.append(relative_norm(R, Y))
        X += solve(R)
    return X, history

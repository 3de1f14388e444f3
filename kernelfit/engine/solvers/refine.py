"""Mixed-precision iterative refinement.

The factor is float32 (it is what fits in memory); residuals are float64
against an operator (the stored K, or the exact K recomputed from data), and
each correction reuses the cheap float32 factor. Converges while
cond(K) * eps_float32 < 1, each step cutting the residual by about that
factor (full MNIST: 1.0e-4 -> 1.8e-6 -> 5.4e-8 -> 2.0e-9); once a step stops
cutting it, more steps cannot help (float64's floor, or cond(K) eps_float32
>= 1), so the refinement stops there and says why.
"""

from __future__ import annotations

import numpy as np

from kernelfit.engine.solvers.scaling import scaled_norm

# A step must cut the residual at least this much, or the refinement stops: converging
# steps cut it by 1 / (cond(K) eps_float32), 30x-1000x in the runs above; a step that
# does not halve it is at float64's floor or diverging.
STALL_RATIO = 0.5


def relative_norm(R, Y) -> float:
    """||R||_F / ||Y||_F, or ||R||_F when Y is all zeros (the ratio is then undefined).

    For an all-zero Y the exact solution is 0, and the absolute residual says
    how far from it a solve landed. Both norms are scaled (:mod:`.scaling`):
    targets near 1e300 give their ratio, not inf / inf.
    """
    ynorm = float(scaled_norm(Y))
    rnorm = float(scaled_norm(R))
    return rnorm / ynorm if ynorm > 0 else rnorm


def relative_residual(op, X, Y) -> float:
    """||op @ X - Y||_F / ||Y||_F (absolute when Y = 0, see :func:`relative_norm`)."""
    Y = np.asarray(Y, dtype=np.float64)
    return relative_norm(op @ X - Y, Y)


def refine(solve, op, Y, X, steps: int):
    """Improve X for op X = Y with up to ``steps`` corrections X += solve(Y - op X).

    Stops early when the residual is exactly 0, or when a correction did not
    cut it by :data:`STALL_RATIO` (then the best iterate seen is returned:
    a diverging step is undone).

    Returns
    -------
    X : ndarray, refined (float64)
    history : list of float
        Relative residual of each iterate the refinement measured, the first
        before any correction (the caller computes the final one together
        with whatever else needs ``op @ X``).
    stop : str
        Why it stopped, in words: all steps run, or the step that stalled.
    """
    Y = np.asarray(Y, dtype=np.float64)
    X = np.array(X, dtype=np.float64)
    history = []
    best = (np.inf, None)
    for step in range(steps):
        R = Y - op @ X
        r = relative_norm(R, Y)
        history.append(r)
        if r == 0:
            return X, history, f"exact after {step} of {steps} steps (residual 0)"
        if step and not r <= STALL_RATIO * history[-2]:
            if not r <= best[0]:
                X = best[1]            # the step made it worse: keep the best iterate
            return X, history, (
                f"stopped after {step} of {steps} steps: step {step} took the residual "
                f"from {history[-2]:.1e} to {r:.1e}, less than a {1 / STALL_RATIO:.0f}x "
                "cut, so further steps cannot improve it")
        if r < best[0]:
            best = (r, X.copy())
        X += solve(R)
    return X, history, f"all {steps} steps run"


def refine_flops(n: int, d: int, n_outputs: int, steps: int, *, exact: bool) -> float:
    """Float64 work of ``steps`` refinement steps at most (what a time estimate counts).

    Each step is one residual (a product with K; against the exact K also its
    recomputation, a float64 Gram pass over d features) and two triangular
    solves with the factor.
    """
    c = max(n_outputs, 1)
    per_step = 2.0 * n * n * c + 2.0 * n * n * c + (2.0 * n * n * d if exact else 0.0)
    return steps * per_step

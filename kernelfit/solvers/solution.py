"""What a solve returns and how it is judged: :class:`Solution`, the residual limits, the gate.

Every solver (direct, CG, PCG, K^+ Y, Dask) builds its :class:`Solution` with
:func:`measure` (K alpha through the same operator that measured the residual)
and passes it through :func:`check_solution`, the one quality gate: alpha must
be finite (else :class:`NonFiniteError`, always), the relative residual within
what the working dtype allows (:func:`residual_limit`) and an iterative solve
must have reached its tolerance; anything less becomes an
:class:`AccuracyWarning` recorded in ``Solution.warnings`` (or
:class:`AccuracyError` with ``Options(strict=True)``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import BANDWIDTH_REMEDY, AccuracyError, AccuracyWarning, NonFiniteError
from ..options import Options
from .refine import relative_norm

# The relative residual a direct solve may leave, per working dtype, times sqrt(n).
# A backward-stable solve leaves about sqrt(n) eps kappa, where sqrt(n) is the
# random-walk growth of rounding over the length-n rows of K alpha and kappa =
# ||K|| ||alpha|| / ||Y|| the conditioning Y sees. The limits allow kappa up to
# ~5e7 in float64 (1e-8 / 2.2e-16) and ~1e3 in float32 (1e-4 / 1.2e-7): beyond
# them K's conditioning has eaten more than half of the dtype's digits (the
# model reproduces its training targets to fewer than 8 resp. 4 digits), which a
# well-posed interpolation does not need. Measured: MNIST, n = 5,000, sigma = 10
# leaves 1.1e-12 (float64) and 5.9e-4 (float32, limit 7e-3); digits with the
# default scale 1.6e-13 / 8e-5; the nearly singular digits K of sigma = 1000,
# n = 250 leaves 1.2e-3 in float64 (limit 1.6e-7) and is flagged.
RESIDUAL_LIMIT = {"float64": 1e-8, "float32": 1e-4}


def residual_limit(dtype, n: int) -> float:
    """The largest relative residual a direct solve in ``dtype`` of n points should leave."""
    return RESIDUAL_LIMIT[np.dtype(dtype).name] * float(np.sqrt(max(n, 1)))


@dataclass
class Solution:
    """A solve and its measurements.

    ``relative_residual`` is ||(K + shift I) alpha - Y||_F / ||Y||_F, and the
    absolute residual ||(K + shift I) alpha - Y||_F when Y is all zeros (then
    alpha = 0 is exact and the ratio is undefined).
    """

    alpha: np.ndarray           # (n, c) float64
    K_alpha: np.ndarray         # K alpha (no shift): the fit on the training points
    relative_residual: float    # see above
    norm: float                 # sqrt(trace(alpha^T K alpha))
    shift: float                # lam + jitter actually used
    iterations: int = 0
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    converged: bool = True      # False: less exact than the dtype allows, or CG short of tol
    warnings: list = field(default_factory=list)   # each inexactness, in words


def numeric_jitter(jitter) -> float:
    return float(jitter) if isinstance(jitter, (int, float)) else 0.0


def measure(op, alpha, Y, sol_kwargs) -> Solution:
    t = time.perf_counter()
    with np.errstate(invalid="ignore", over="ignore"):   # a NaN alpha is judged in check_solution
        KA = op @ alpha
        K_alpha = KA - op.shift * alpha
        sol = Solution(alpha=alpha, K_alpha=K_alpha,
                       relative_residual=relative_norm(KA - Y, Y),
                       norm=float(np.sqrt(max(np.sum(alpha * K_alpha), 0.0))),
                       shift=op.shift, **sol_kwargs)
    sol.timings["residual"] = time.perf_counter() - t
    return sol


def check_solution(sol: Solution, *, limit: float, options: Options, dtype,
                   explain_nonfinite=None) -> Solution:
    """The quality gate every solve passes through; returns ``sol`` (warnings recorded).

    Raises
    ------
    NonFiniteError
        alpha holds NaN or infinity (always).
    AccuracyError
        ``options.strict`` and anything was less exact than ``dtype`` allows.
    """
    if not np.all(np.isfinite(sol.alpha)):
        why = explain_nonfinite() if explain_nonfinite is not None else ""
        raise NonFiniteError(
            f"the solve produced NaN or infinity{': ' + why if why else ''}. Rescale X "
            "(e.g. sklearn.preprocessing.StandardScaler), use dtype='float64', or pass lam > 0.")
    res = sol.relative_residual
    sol.info["residual_limit"] = limit
    # A CG that stopped early has said so with its residual; blaming K's
    # conditioning on top of that would mislead.
    if not (np.isfinite(res) and res <= limit) and sol.converged:
        sol.converged = False
        dt = np.dtype(dtype).name
        hint = ("--dtype float64 / dtype='float64', or --refine-steps 2 / refine_steps=2; "
                if dt == "float32" else "") + "--lam / lam > 0; " + BANDWIDTH_REMEDY
        sol.warnings.append(
            f"the solve left relative residual {res:.2e}, above {limit:.1e} (what a {dt} "
            f"solve of n={len(sol.alpha):,} should reach): K is ill-conditioned in {dt}, so "
            f"the model does not reproduce its training targets to working precision. "
            f"Try {hint}.")
    sol.info["converged"] = sol.converged
    if sol.warnings and options.strict:
        raise AccuracyError(" ".join(sol.warnings) + " (--strict / Options(strict=True) "
                            "makes this an error; without it the model is returned with a "
                            "warning.)")
    for msg in sol.warnings:
        warnings.warn(msg, AccuracyWarning, stacklevel=3)
    return sol

"""What a solve returns and how it is judged: :class:`Solution`, the residual limits, the gate.

Every solver (direct, CG, PCG, K^+ Y, Dask) builds its :class:`Solution` with
:func:`measure` (K alpha through the same operator that measured the residual)
and passes it through :func:`check_solution`, the one quality gate: alpha must
be finite (else :class:`NonFiniteError`, always), the relative residual within
what the working dtype allows (:func:`residual_limit`) and an iterative solve
must have reached its tolerance, and the answer must not be degenerate
(:mod:`kernelfit.engine.solvers.degenerate`: K the identity, constant decision
values, a lam that swamps K, lam = 0 without interpolation, an overflowing
norm); anything less becomes an :class:`AccuracyWarning` recorded in
``Solution.warnings`` (or :class:`AccuracyError` with
``Options(strict=True)``). A CG solve that met a singular K and could not be
answered by K^+ Y is refused (:class:`SingularKernelError`, always).

:func:`measure` computes K alpha with the operator's shift set to 0 (never as
(K + lam I) alpha - lam alpha, which cancels when lam >> ||K||) and every
norm scaled (:mod:`.scaling`), so huge lam and targets near 1e300 are measured
right.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from kernelfit.engine.solvers.degenerate import (
    acts_as_diagonal,
    constant_columns,
    degenerate_warnings,
)
from kernelfit.engine.solvers.pinv import PINV_MAX_N
from kernelfit.engine.solvers.refine import relative_norm
from kernelfit.engine.solvers.scaling import pow2_scale
from kernelfit.errors import (
    BANDWIDTH_REMEDY,
    AccuracyError,
    AccuracyWarning,
    NonFiniteError,
    SingularKernelError,
)
from kernelfit.options import Options

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
    # What the degeneracy rules read (kernelfit.engine.solvers.degenerate), set by measure:
    train_residual: float = float("nan")   # ||K alpha - Y|| / ||Y||: the fit, without the shift
    k_diag_max: float = float("nan")       # K's largest diagonal entry (lam is measured by it)
    k_diagonal_only: bool = False          # K is its diagonal to working precision
    targets_constant: bool = False         # every column of Y is one value


def numeric_jitter(jitter) -> float:
    return float(jitter) if isinstance(jitter, (int, float)) else 0.0


@contextmanager
def _unshifted(op):
    """``op`` as K alone: its shift set to 0 for the block, then restored.

    (K + lam I) alpha - lam alpha loses K alpha to cancellation once lam >> ||K||
    (at lam = 1e16 on digits the classifier's train error read 10% for 4%).
    """
    shift = op.shift
    op.shift = 0.0
    try:
        yield op
    finally:
        op.shift = shift


def rkhs_norm(alpha, K_alpha) -> float:
    """sqrt(trace(alpha^T K alpha)), scaled: alpha near 1e-308 or 1e300 does not under/overflow.

    The scales are powers of two, so where the unscaled sum is a normal number
    it is recovered exactly (the norm has the bits it had unscaled).
    """
    a, b = float(pow2_scale(alpha)), float(pow2_scale(K_alpha))
    with np.errstate(over="ignore", under="ignore"):
        inner = max(float(np.sum((np.asarray(alpha) / a) * (np.asarray(K_alpha) / b))), 0.0)
        whole = inner * a * b
        if np.isfinite(whole) and (whole == 0.0 if inner == 0.0 else
                                   whole >= np.finfo(np.float64).tiny):
            return float(np.sqrt(whole))
        return float(np.sqrt(inner) * np.sqrt(a) * np.sqrt(b))


def measure(op, alpha, Y, sol_kwargs) -> Solution:
    """K alpha, the residual, the norm and the facts the degeneracy rules read, through ``op``."""
    t = time.perf_counter()
    with np.errstate(invalid="ignore", over="ignore"):   # a NaN alpha is judged in check_solution
        with _unshifted(op) as K:
            # alpha / s (a power of two per column) keeps a float32 operator's copy finite.
            s = pow2_scale(alpha, axis=0)
            K_alpha = (K @ (alpha / s)) * s
            k_diag = np.asarray(K.diagonal(), dtype=np.float64)
            diagonal_only = acts_as_diagonal(K, alpha, K_alpha, k_diag)
        R = K_alpha + op.shift * alpha - Y
        sol = Solution(alpha=alpha, K_alpha=K_alpha, relative_residual=relative_norm(R, Y),
                       norm=rkhs_norm(alpha, K_alpha), shift=op.shift,
                       train_residual=relative_norm(K_alpha - Y, Y),
                       k_diag_max=float(np.max(k_diag)) if len(k_diag) else float("nan"),
                       k_diagonal_only=diagonal_only,
                       targets_constant=constant_columns(Y, op.dtype), **sol_kwargs)
    sol.timings["residual"] = time.perf_counter() - t
    return sol


def check_solution(sol: Solution, *, limit: float, options: Options, dtype,
                   explain_nonfinite=None) -> Solution:
    """The quality gate every solve passes through; returns ``sol`` (warnings recorded).

    Raises
    ------
    NonFiniteError
        alpha holds NaN or infinity (always).
    SingularKernelError
        A CG solve met a K singular to working precision (``info["singular"]``,
        set by the solver) and was not answered by K^+ Y (always).
    AccuracyError
        ``options.strict`` and anything was less exact than ``dtype`` allows.
    """
    if not np.all(np.isfinite(sol.alpha)):
        why = explain_nonfinite() if explain_nonfinite is not None else ""
        raise NonFiniteError(
            f"the solve produced NaN or infinity{': ' + why if why else ''}. Rescale X "
            "(e.g. sklearn.preprocessing.StandardScaler), use dtype='float64', or pass lam > 0.")
    singular = sol.info.get("singular")
    if singular and singular.get("refuse"):
        raise SingularKernelError(len(sol.alpha), dtype, singular["evidence"],
                                  solver=singular.get("solver", "this CG solve"),
                                  pinv_max_n=PINV_MAX_N)
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
    stop = sol.info.get("refine_stop", "")
    limit64 = residual_limit("float64", len(sol.alpha))
    if stop.startswith("stopped") and sol.converged and not res <= limit64:
        # Refinement is asked for to reach float64's accuracy; one that stalls short of
        # it says so rather than passing on the float32 limit alone.
        sol.converged = False
        sol.warnings.append(
            f"iterative refinement {stop}: relative residual {res:.2e}, above the "
            f"{limit64:.1e} a float64 solve of n={len(sol.alpha):,} reaches. cond(K) "
            "eps_float32 is near or above 1, so corrections from a float32 factor cannot "
            "converge; try --dtype float64 / dtype='float64', --lam / lam > 0, or "
            + BANDWIDTH_REMEDY + ".")
    # Degenerate answers warn without touching `converged`: the solve itself was exact.
    sol.warnings += degenerate_warnings(sol, limit=limit, dtype=dtype)
    sol.info["converged"] = sol.converged
    if sol.warnings and options.strict:
        raise AccuracyError(" ".join(sol.warnings) + " (--strict / Options(strict=True) "
                            "makes this an error; without it the model is returned with a "
                            "warning.)")
    for msg in sol.warnings:
        warnings.warn(msg, AccuracyWarning, stacklevel=3)
    return sol

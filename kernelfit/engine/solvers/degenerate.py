"""Answers that meet their residual limit and are still worthless: the rules that flag them.

A solve can be exact to working precision and its model predict nothing. Each
rule here turns one such case into a sentence with its remedy;
:func:`~kernelfit.engine.solvers.solution.check_solution`, the one gate every solve
passes, makes them :class:`~kernelfit.errors.AccuracyWarning` (or
:class:`~kernelfit.errors.AccuracyError` with ``Options(strict=True)``), so
the estimators' ``warnings_`` and a run's record carry them. Warnings, not
refusals: each answer is the exact solution of the system that was posed
(a sweep over bandwidths or lam is right to record it), but none may look
like a result.

* K is its diagonal to working precision (a bandwidth far below the distances
  between points): the fit memorizes alpha = y / k(x, x) and predicts ~0
  away from the training points. :func:`acts_as_diagonal` tests it where the
  operator is at hand (:func:`~kernelfit.engine.solvers.solution.measure`).
* The training decision values K alpha are all equal (K all ones to rounding,
  or alpha underflowed to 0): one prediction for every point.
* lam + jitter swamps K (:data:`SWAMP_FACTOR`).
* lam = 0 asks for an interpolant, and a jitter moved the fit off it.
* The norm overflows float64 (it is computed scaled, so only a norm beyond
  float64's range is inf).
"""

from __future__ import annotations

import numpy as np

from kernelfit.engine.kernels import SCALE_REMEDY
from kernelfit.engine.solvers.scaling import scaled_norm

# lam + jitter at or above this multiple of K's largest diagonal entry swamps K. The
# fit on the training points is H y with H = K (K + s I)^{-1}, and H_ii <= K_ii / s
# (each eigencomponent is shrunk by lambda / (lambda + s) <= lambda / s): from s =
# 1e3 max K_ii on, no training point has more than 0.1% weight on its own fitted
# value, and the model is K y / s to first order, the kernel-weighted mean of the
# targets (digits, lam = 1e16: 4% train error, where an interpolant has 0). That is
# a valid ridge fit, but neither the interpolant nor a ridge that K's structure
# shapes, so it is said loudly; refusing would break sweeps over lam.
SWAMP_FACTOR = 1e3


def constant_columns(F, dtype) -> bool:
    """Whether every column of F (n >= 2 rows) is one value, to sqrt(eps(dtype)) of its size.

    All zeros counts as constant. NaN never does (the gate reports it on its own).
    """
    F = np.asarray(F, dtype=np.float64).reshape(len(F), -1)
    if len(F) < 2:
        return False
    with np.errstate(invalid="ignore", over="ignore"):
        spread = F.max(axis=0) - F.min(axis=0)
        size = np.abs(F).max(axis=0)
        return bool(np.all(spread <= np.sqrt(np.finfo(np.dtype(dtype)).eps) * size))


def acts_as_diagonal(op, alpha, K_alpha, k_diag, *, seed: int = 0) -> bool:
    """Whether K (``op``, its shift set to 0) is its diagonal to working precision.

    The definition: every off-diagonal entry below eps(op's dtype) x max K_ii.
    Then ||(K - D) v|| <= n eps max K_ii ||v|| for every v, so the solution is
    tested first, for free (K alpha is at hand); only a solution that passes
    pays one more product, with a random +-1 vector, which confirms it (a K
    that relates some points leaves (K - D) v of the size of those entries).
    """
    k_diag = np.asarray(k_diag, dtype=np.float64)
    n = len(k_diag)
    dmax = float(np.max(k_diag)) if n else 0.0
    if n < 2 or not (np.isfinite(dmax) and dmax > 0):
        return False
    tol = n * float(np.finfo(np.dtype(op.dtype)).eps) * dmax
    A = np.asarray(alpha, dtype=np.float64).reshape(n, -1)
    with np.errstate(invalid="ignore", over="ignore"):
        off = np.asarray(K_alpha, dtype=np.float64).reshape(n, -1) - k_diag[:, None] * A
        if not scaled_norm(off) <= tol * scaled_norm(A):
            return False
        v = np.random.default_rng(seed).choice([-1.0, 1.0], size=n)
        return bool(scaled_norm(op @ v - k_diag * v) <= tol * np.sqrt(n))


def degenerate_warnings(sol, *, limit: float, dtype) -> list[str]:
    """The sentences (remedy included) for each way ``sol`` is degenerate; [] if none."""
    out = []
    jitter = float(sol.info.get("jitter", 0.0) or 0.0)
    lam = sol.shift - jitter
    if sol.k_diagonal_only:
        eps = np.finfo(np.dtype(dtype)).eps
        out.append(
            f"K is the identity to working precision (every off-diagonal entry is below "
            f"{eps:.1e} x its largest diagonal entry): the kernel relates no two training "
            "points, so the model memorizes them (alpha = y / k(x, x)) and predicts ~0, one "
            "class, away from them; the bandwidth is far below the distances between points. "
            f"{SCALE_REMEDY[0].upper()}{SCALE_REMEDY[1:]}.")
    elif not sol.targets_constant and constant_columns(sol.K_alpha, dtype):
        out.append(
            "every training point gets the same decision values (K alpha is constant in each "
            "output): the model predicts one value, one class, everywhere. K relates all "
            "points alike to working precision (all ones: a bandwidth far above the distances "
            f"between points; {SCALE_REMEDY}; for a linear or polynomial kernel, rescale X, "
            "e.g. sklearn.preprocessing.StandardScaler), or lam swamped it (alpha = y / lam "
            "underflowed).")
    dmax = sol.k_diag_max
    if np.isfinite(dmax) and dmax > 0 and sol.shift >= SWAMP_FACTOR * dmax:
        what, over = ("lam + jitter", "(lam + jitter)") if jitter else ("lam", "lam")
        out.append(
            f"{what} = {sol.shift:.3g} is {sol.shift / dmax:.1e} x K's largest diagonal entry "
            f"({dmax:.3g}): no training point has more than K_ii / {over} <= "
            f"{dmax / sol.shift:.0e} of weight on its own fit, so the model is ~K y / {over} "
            f"(||K alpha - y|| / ||y|| = {sol.train_residual:.3g}), neither an interpolant nor "
            "a ridge fit that K shapes. Pass lam on the scale of K's diagonal (--lam auto / "
            "kernelfit.pipeline.select, e.g. 1e-4 to 1e-1 x its mean), or lam = 0 to "
            "interpolate" + (", and drop or lower --jitter / jitter" if jitter else "") + ".")
    elif lam == 0 and jitter > 0 and not sol.train_residual <= limit:
        dt = np.dtype(dtype).name
        out.append(
            f"lam = 0 asks for an interpolant, but the jitter {jitter:.3g} added to K's "
            f"diagonal leaves ||K alpha - y|| / ||y|| = {sol.train_residual:.2e}, above "
            f"{limit:.1e} (what a {dt} solve of n={len(sol.alpha):,} should reach): the model "
            "does not reproduce its training targets. Drop the jitter (--jitter / jitter "
            "omitted: a K singular to working precision then gets its minimum-norm solution "
            "K^+ y)" + (", use --dtype float64 / dtype='float64'" if dt == "float32" else "")
            + ", or pass lam > 0 if a ridge fit is what you want.")
    if not np.isfinite(sol.norm) and np.all(np.isfinite(sol.alpha)):
        out.append(
            f"the norm sqrt(alpha^T K alpha) overflows float64 ({sol.norm}): the model is "
            "linear in y, so fit y / c for a large c (e.g. the largest |y|) and multiply its "
            "predictions by c.")
    return out

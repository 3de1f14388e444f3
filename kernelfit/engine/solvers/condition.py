"""How far a Cholesky solve can be trusted: a cheap condition estimate of the factored K + shift I.

A backward-stable solve leaves a small residual whatever K's conditioning, so
the residual gate (:func:`~kernelfit.engine.solvers.solution.check_solution`) cannot
see an alpha that rounding has ruined: a float32 Cholesky of a 40-point
Gaussian K with cond 1.8e8 left a residual within its limit and alpha 305%
away from the float64 solution. What bounds alpha's error is
cond(K + shift I) x eps(working dtype).

Two estimates, both O(n^2) at most next to the factor's n^3 / 3:

* LAPACK's ``?pocon`` (Hager-Higham 1-norm estimator, a few triangular solves
  with the factor) where the factor is one host LAPACK array below 2^31
  elements; it needs ||K + shift I||_1, read from K's strict upper triangle,
  which the in-place factor leaves intact. Within a small factor of the
  1-norm condition number in practice (measured on Gaussian K, 40 points,
  cond_2 1e3..2e7: 2.2 to 2.5 x cond_2).
* where the factor is one host array too large for one LAPACK call (n above
  46,340: full MNIST and CIFAR-10 in memory), the same Hager-Higham estimator
  written here (:func:`inverse_one_norm`) on the tiled solves, with the same
  ||K + shift I||_1: four to eleven solves of one or two columns, each one pass
  over the factor like the solve of Y itself. Before it these sizes got the
  pivot bound below, which can stay silent where this one speaks: on the
  CIFAR-10 NNGP K of n = 50,000 the pivot bound read 1.1e3 and this estimate
  3.1e8 (benchmarks/results/cifar10_nngp_depth1_hager_2cpu-24gb.json).
* everywhere else (device, streamed or disk tiles), (max l_ii / min l_ii)^2
  from the factor's diagonal, collected as the panels are factored: a lower
  bound of cond_2, since every pivot l_ii^2 is the first entry of a Schur
  complement, whose eigenvalues interlace K's (measured 20 to 100 x below
  cond_2 on the same problems: a warning from it is never false, but it can
  stay silent where the other would speak).
"""

from __future__ import annotations

import numpy as np

from kernelfit.engine import sizes
from kernelfit.engine.sizes import NORM_CHUNK_ELEMENTS
from kernelfit.errors import BANDWIDTH_REMEDY

# Warn once cond x eps(dtype) exceeds this. A backward-stable solve gives alpha with
# relative error up to ~cond x eps; from 1e-2 on, alpha (and the norm the paper
# reports, sqrt(alpha^T K alpha)) may have fewer than two correct digits. In float32
# that is cond > 8e4: the 40-point Gaussian K of cond 1.9e5 measured 1e-3 error in
# alpha, that of cond 1.8e8 305%; in float64, cond > 4.5e13.
COND_EPS_LIMIT = 1e-2

def pivot_bound(l_diag) -> float:
    """(max l_ii / min l_ii)^2 <= cond_2(L L^T); inf for a zero pivot, nan without one."""
    d = np.abs(np.asarray(l_diag, dtype=np.float64))
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    lo, hi = float(d.min()), float(d.max())
    return (hi / lo) ** 2 if lo > 0 else float("inf")


def condition_estimate(f) -> tuple[float, str]:
    """An estimate of cond(K + shift I) for a :class:`~kernelfit.engine.solvers.cholesky.Factor`.

    Returns ``(estimate, method)``; see the module doc for the two methods.
    """
    store = f.store
    A = getattr(store, "A", None)
    if A is not None and store.backend.name == "numpy":
        norm = _one_norm(A, f.k_diag, f.shift)
        if A.size <= sizes.LP64_ELEMENTS:
            from scipy.linalg import get_lapack_funcs

            pocon, = get_lapack_funcs(("pocon",), (A,))
            # A.T is Fortran-ordered (no copy); its upper triangle is L^T: A = U^T U, U = L^T.
            rcond, info = pocon(A.T, norm, uplo="U")
            if info == 0 and rcond > 0:
                return 1.0 / float(rcond), "LAPACK ?pocon (1-norm)"
        else:
            return (norm * inverse_one_norm(f.solve, f.n),
                    "Hager-Higham 1-norm estimate on the tiled solves")
    return pivot_bound(f.l_diag), "(max l_ii / min l_ii)^2, a lower bound"


def inverse_one_norm(solve, n: int, max_steps: int = 5) -> float:
    """An estimate of ||B^-1||_1 for a symmetric B, from ``solve(Y)`` = B^-1 Y.

    Hager's method as Higham refined it (LAPACK's ?lacon): a gradient ascent of
    ||B^-1 x||_1 over the unit 1-norm ball, whose maximum sits at a column e_j;
    it stops once a step no longer grows the estimate, within ``max_steps``.
    Higham's extra vector of alternating, growing entries is solved beside the
    first step (one pass over the factor for both) and catches the matrices on
    which the ascent stops early. Each step gives a norm actually attained, so
    the estimate never exceeds ||B^-1||_1; in practice it is within a factor 3.
    B^-1 is symmetric, so its transpose needs no other solve.
    """
    i = np.arange(n)
    alt = (-1.0) ** i * (1 + i / max(n - 1, 1))
    x = np.full(n, 1.0 / n)
    first = solve(np.stack([x, alt], axis=1))
    y = first[:, 0]
    extra = 2 * float(np.abs(first[:, 1]).sum()) / (3 * n)
    est = float(np.abs(y).sum())
    for _ in range(max_steps):
        z = solve(np.where(y >= 0, 1.0, -1.0))     # the gradient of ||B^-1 x||_1 at x
        j = int(np.argmax(np.abs(z)))
        # x is a local maximum once no column's gradient beats the current point's.
        if abs(z[j]) <= float(z @ x):
            break
        x = np.zeros(n)
        x[j] = 1.0
        y = solve(x)
        new = float(np.abs(y).sum())
        if new <= est:
            break
        est = new
    return max(est, extra)


def _one_norm(A, k_diag, shift: float) -> float:
    """||K + shift I||_1 from K's strict upper triangle and diagonal, a row chunk at a time."""
    n = A.shape[0]
    col = np.abs(np.asarray(k_diag, dtype=np.float64) + shift)
    rows = max(1, NORM_CHUNK_ELEMENTS // n)
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        U = np.abs(A[r0:r1, r0:], dtype=np.float64)
        U[:, :r1 - r0] *= np.triu(np.ones((r1 - r0, r1 - r0)), 1)   # below: the factor
        col[r0:] += U.sum(axis=0)          # the strict upper triangle, by columns
        col[r0:r1] += U.sum(axis=1)        # its mirror below, by symmetry
    return float(col.max())


def condition_warning(cond: float, dtype, *, error_floor: float | None = None) -> str | None:
    """The warning for an untrustworthy alpha (cond x eps above :data:`COND_EPS_LIMIT`), or None.

    ``error_floor``: the relative residual against K in float64 after
    refinement, when it ran (the factor's eps then no longer bounds the error).
    """
    dt = np.dtype(dtype)
    unit = (float(np.finfo(dt).eps) if error_floor is None
            else max(float(error_floor), float(np.finfo(np.float64).eps)))
    if np.isnan(cond) or not cond * unit > COND_EPS_LIMIT:
        return None
    hint = ("--dtype float64 / dtype='float64', --refine-steps 2 / refine_steps=2 (refinement "
            "against K in float64), " if dt == np.float32 else "")
    return (f"K + lam I has condition number about {cond:.1e} (estimate), so alpha may be off "
            f"by up to ~{min(cond * unit, 1e300):.0e} relative in {dt.name} although the "
            "residual is small: its digits, and the norm, are untrustworthy. Try " + hint
            + "--lam / lam > 0; " + BANDWIDTH_REMEDY + ".")


def judge_condition(f, sol, opts, op) -> None:
    """Record factor ``f``'s condition estimate in ``sol.info``; warn if alpha is untrustworthy.

    Refinement with float64 residuals (against a float64 K) takes alpha's error
    from the factor's eps down to its final residual: that is then what cond
    multiplies.
    """
    cond, method = condition_estimate(f)
    sol.info.update(cond_estimate=cond, cond_estimate_method=method)
    refined = bool(opts.refine_steps) and np.dtype(op.dtype) == np.float64
    msg = condition_warning(cond, f.store.dtype,
                            error_floor=sol.relative_residual if refined else None)
    if msg:
        sol.warnings.append(msg)

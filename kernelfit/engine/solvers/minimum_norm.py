"""K^+ Y where a solve met a K singular to working precision: the Cholesky's fallback and CG's.

A Cholesky that meets a pivot <= 0, or factors but leaves a residual above
its limit, and a CG or PCG on a stored K that met the singularity (a
breakdown, or a rank-deficient preconditioner sketch) are answered by the
minimum-norm solution K^+ Y (:mod:`kernelfit.engine.solvers.pinv`) where that is
allowed (:func:`pinv_allowed`), with a warning that names K's rank. A CG
whose K is never stored, or where K^+ Y is not allowed, keeps the evidence in
``info["singular"]`` for :func:`~kernelfit.engine.solvers.solution.check_solution`.
"""

from __future__ import annotations

import time

import numpy as np

from kernelfit.engine.backend import backend_of
from kernelfit.engine.sizes import PINV_MAX_N
from kernelfit.engine.solvers.pinv import pinv_solve, plan_pinv
from kernelfit.engine.solvers.solution import Solution, measure
from kernelfit.engine.storage.operators import StoredOperator
from kernelfit.errors import BANDWIDTH_REMEDY, NotPositiveDefiniteError, PlanError
from kernelfit.options import Options


def pinv_allowed(n: int, lam: float, opts: Options) -> bool:
    """Whether a singular K is answered by K^+ Y rather than reported."""
    return lam == 0 and opts.jitter is None and not opts.strict and n <= PINV_MAX_N


def solve_pinv(K, k_diag, Y, opts: Options, timings: dict, *, reason: str) -> Solution:
    """K^+ Y, measured, with the warning that says what happened.

    The eigendecomposition runs on the host; a device K (n <= PINV_MAX_N, at
    most half a GB) is copied there first.
    """
    K = backend_of(K).to_host(K)
    n = len(K)
    try:
        plan_pinv(n, opts, in_use=K.nbytes)
    except PlanError as err:
        raise NotPositiveDefiniteError(
            pivot=None, n=n, dtype=K.dtype,
            detail=f" (n={n:,}); K is singular to working precision ({reason}) and its "
                   f"minimum-norm solution does not fit: {err}") from err
    t = time.perf_counter()
    alpha, pinfo = pinv_solve(K, k_diag, Y, stored_dtype=K.dtype)
    timings["pinv"] = time.perf_counter() - t
    info = {"jitter": 0.0, "jitter_attempts": [], **pinfo, "pinv_reason": reason,
            "residual_against": f"the stored K ({K.dtype.name})"}
    sol = measure(StoredOperator(K, k_diag, 0.0), alpha, Y, dict(timings=timings, info=info))
    what = (f"K is singular to working precision (rank {pinfo['rank']} of {n}; {reason}): "
            "returned the minimum-norm least-squares solution K^+ y" if pinfo["rank"] < n else
            f"K is not positive definite to working precision ({reason}) but has full "
            f"rank {n} in a float64 eigendecomposition: returned K^-1 y from it")
    sol.warnings.append(
        what + ". For a unique interpolant remove duplicate points, or pass --lam / lam > 0"
        + (", or use --dtype float64 / dtype='float64' (K may have full rank there)"
           if K.dtype == np.float32 else "") + "; " + BANDWIDTH_REMEDY + ".")
    return sol


def minimum_norm_if_singular(sol: Solution, K, k_diag, Y, lam: float,
                              opts: Options) -> Solution:
    """K^+ Y in place of a CG solve that met a singular K, where the stored K allows it.

    CG from zero stays in K's range in exact arithmetic, but on a K singular to
    working precision its iterates drift along the null space (linear kernel on
    digits, n = 300 > d = 64: predictions 1e7 away from lstsq's). The stored K
    (both triangles intact: CG does not modify it) gives K^+ Y through the
    rank-revealing path, and the smaller residual is kept, as after a Cholesky
    solve that missed its limit (at a very wide bandwidth CG's iterate can leave
    less than the truncated K^+ Y). Where K^+ Y is not allowed (strict, jitter,
    n > PINV_MAX_N) a breakdown stays marked for refusal by check_solution.
    """
    singular = sol.info.get("singular")
    if not singular or not pinv_allowed(len(sol.alpha), lam, opts):
        return sol
    try:
        alt = solve_pinv(K, k_diag, Y, opts, dict(sol.timings), reason=singular["evidence"])
    except NotPositiveDefiniteError:    # no room for the eigendecomposition: CG's answer is refused
        return sol
    if alt.relative_residual < sol.relative_residual:
        alt.iterations = sol.iterations
        alt.info["replaced"] = {"iterations": sol.iterations,
                                "relative_residual": sol.relative_residual,
                                "preconditioner": sol.info.get("preconditioner")}
        return alt
    singular["refuse"] = False
    sol.info["pinv_relative_residual"] = alt.relative_residual
    return sol


def singular_evidence(info: dict, shift: float, what: str) -> dict | None:
    """What says K is singular to working precision after a CG solve that failed at shift 0.

    A breakdown (p^T K p <= 0: no positive definite K has such a direction) is
    proof, and leaves an iterate that no one should use: it is refused unless
    K^+ Y replaces it. The eigen preconditioner's sketch of rank below its size
    proves it too (see TopEigenPreconditioner.sketch_rank) but CG's iterate may
    still be the better answer (early stopping regularizes): it is only compared.
    """
    if shift != 0 or info["converged"]:
        return None
    why = []
    if info.get("breakdown"):
        why.append(f"{what} met a search direction with p^T K p <= 0 after "
                   f"{info['iterations']} iterations")
    p = info.get("preconditioner") or {}
    if "sketch_rank" in p and p["sketch_rank"] < p["sketch"]:
        why.append(f"the preconditioner's sketch of {p['sketch']:,} of its columns has "
                   f"numerical rank {p['sketch_rank']:,}")
    if not why:
        return None
    return {"evidence": "; ".join(why), "refuse": bool(info.get("breakdown"))}

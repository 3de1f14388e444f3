"""Solve (K + lam I) alpha = Y, measure the result, and judge it: one entry point per source of K.

:func:`solve_stored` takes a Gram buffer however it was built (in memory, on
disk, streamed from feature chunks); :func:`solve_matrix_free` never stores K.
Both return a :class:`Solution` with what the paper reports: the norm
sqrt(trace(alpha^T K alpha)), the residual, and K alpha on the training points.

Every solve ends in :func:`~kernelfit.engine.solvers.solution.check_solution`, the
one quality gate (:mod:`kernelfit.engine.solvers.solution`).

A K that is singular to working precision (Cholesky meets a pivot <= 0, or
factors but leaves a residual above the limit and K^+ Y does better, or the
caller found duplicate points with agreeing targets) with ``lam == 0`` and
no jitter is answered by the minimum-norm solution K^+ Y
(:mod:`kernelfit.engine.solvers.pinv`), with a warning that names its rank, where n
is small enough for an eigendecomposition. With ``jitter="auto"`` a factor
whose solve misses the residual limit is rejected and the next jitter tried.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from kernelfit.engine.backend import backend_of
from kernelfit.engine.sizes import CG_MIN_RANK, PINV_MAX_N, device_tile, host_tile, working_dtype
from kernelfit.engine.solvers.cg import block_cg
from kernelfit.engine.solvers.cholesky import factor, restore_lower
from kernelfit.engine.solvers.condition import judge_condition
from kernelfit.engine.solvers.minimum_norm import (
    minimum_norm_if_singular,
    pinv_allowed,
    singular_evidence,
    solve_pinv,
)
from kernelfit.engine.solvers.precond import choose_sketch, sketch_bytes
from kernelfit.engine.solvers.refine import refine
from kernelfit.engine.solvers.solution import (
    Solution,
    check_solution,
    measure,
    numeric_jitter,
    residual_limit,
)
from kernelfit.engine.storage.operators import KernelOperator, StoredOperator
from kernelfit.engine.storage.tiles import HostTileStore
from kernelfit.errors import (
    InputError,
    NonFiniteError,
    NotPositiveDefiniteError,
)
from kernelfit.options import Options


def solve_stored(K, Y, *, lam: float = 0.0, solver: str = "cholesky",
                 options: Options | None = None, singular: bool = False,
                 operator=None, tile: int | None = None) -> Solution:
    """Solve with K held in a buffer or a tile store (it is overwritten by the Cholesky factor).

    Parameters
    ----------
    K : array (n, n) of any backend, C-contiguous, both triangles filled; or a
        :class:`kernelfit.engine.storage.tiles.HostTileStore` (lower tiles, streamed)
    Y : ndarray (n, c)
    solver : {"cholesky", "cg", "pcg"}
        "pcg": :mod:`kernelfit.engine.solvers.pcg` (K is not modified).
    singular : bool
        The caller knows K is exactly singular (duplicate points whose targets
        agree): with ``lam == 0`` and no jitter, go straight to the
        minimum-norm solution K^+ Y (the Cholesky would fail or be useless).
    operator : optional
        What measures residuals, (K + shift I) V; by default K's own strict upper
        triangle. A tile store keeps no copy of K, so it needs one (a
        :class:`KernelOperator` recomputing K from the data).

    The result has passed :func:`check_solution`.
    """
    opts = options or Options()
    n = K.n if isinstance(K, HostTileStore) else int(K.shape[0])
    dtype = K.dtype if isinstance(K, HostTileStore) else backend_of(K).dtype_name(K)
    Y = np.asarray(Y, dtype=np.float64).reshape(n, -1)
    if isinstance(K, HostTileStore) and operator is None:
        raise InputError("a streamed K (HostTileStore) keeps no copy of K: pass operator= "
                         "(a KernelOperator on the data) to measure the residual")
    if solver == "cholesky":
        k_diag = _diagonal(K)  # n floats: K's diagonal for a restore
        sol = _solve_cholesky(K, k_diag, Y, lam, opts, singular, operator,
                              tile or _tile(K, n, opts))
        limit = residual_limit(dtype, n)
    elif solver == "cg":
        if backend_of(K).name != "numpy":
            raise InputError("solver='cg' runs on a host K (backend='numpy'); use "
                             "solver='cholesky' on a device")
        k_diag = _diagonal(K)
        op = StoredOperator(K, k_diag, lam + numeric_jitter(opts.jitter))
        sol = minimum_norm_if_singular(_cg(op, Y, opts, {}), K, k_diag, Y, lam, opts)
        limit = max(2 * opts.tol, residual_limit(dtype, n))
    elif solver == "pcg":
        if isinstance(K, HostTileStore) or backend_of(K).name != "numpy":
            raise InputError("solver='pcg' runs on a host K held whole in memory "
                             "(backend='numpy'); use solver='cholesky' for a device or a "
                             "streamed K")
        k_diag = _diagonal(K)
        sol = minimum_norm_if_singular(_pcg(K, Y, lam + numeric_jitter(opts.jitter), opts),
                                        K, k_diag, Y, lam, opts)
        limit = max(2 * opts.tol, residual_limit(dtype, n))
    else:
        raise InputError(f"solver must be 'cholesky', 'cg' or 'pcg' for a stored K, "
                         f"got {solver!r}")
    return check_solution(sol, limit=limit, options=opts, dtype=dtype,
                          explain_nonfinite=lambda: _nonfinite_in_stored(K, k_diag))


def _diagonal(K) -> np.ndarray:
    return K.diagonal() if isinstance(K, HostTileStore) else backend_of(K).get_diagonal(K)


def _solve_cholesky(K, k_diag, Y, lam: float, opts: Options, singular: bool,
                    operator, tile: int) -> Solution:
    tiled = isinstance(K, HostTileStore)
    n = K.n if tiled else int(K.shape[0])
    timings, info = {}, {}
    limit = residual_limit(K.dtype if tiled else backend_of(K).dtype_name(K), n)
    if not np.all(np.isfinite(k_diag)):                # O(n): an overflowed kernel, caught early
        _raise_if_nonfinite_stored(K, k_diag)
    if singular and pinv_allowed(n, lam, opts) and not tiled:
        return solve_pinv(K, k_diag, Y, opts, timings, reason="duplicate points")
    op = operator if operator is not None else StoredOperator(K, k_diag, 0.0)
    measured = {}

    def accept(f) -> bool:
        # Solve with this factor and measure it; the residual product is the one the
        # Solution reports anyway, so a well-conditioned K pays nothing extra.
        timings["factor"] = f.info["seconds"]
        t = time.perf_counter()
        alpha = f.solve(Y)
        timings["solve"] = time.perf_counter() - t
        op.shift = f.shift
        if opts.refine_steps:
            t = time.perf_counter()
            alpha, info["refine_history"], info["refine_stop"] = refine(
                f.solve, op, Y, alpha, opts.refine_steps)
            timings["refine"] = time.perf_counter() - t
        sol = measure(op, alpha, Y, dict(timings=timings, info=info))
        measured["sol"] = sol
        return bool(np.isfinite(sol.relative_residual) and sol.relative_residual <= limit)

    try:
        f = factor(K, lam=lam, jitter=opts.jitter, tile=tile,
                   progress=opts.progress, accept=accept)
    except NotPositiveDefiniteError as err:
        _raise_if_nonfinite_stored(K, k_diag)
        if not pinv_allowed(n, lam, opts) or tiled:
            if lam == 0 and opts.jitter is None and not opts.strict:
                err.args = (err.args[0] + f" (n={n:,} is above {PINV_MAX_N:,}, the largest n "
                            "whose minimum-norm solution K^+ y is computed here)",)
            raise
        restore_lower(K, k_diag)
        return solve_pinv(K, k_diag, Y, opts, timings,
                           reason=f"Cholesky met pivot {err.pivot} <= 0")
    info.update(f.info)
    sol = measured["sol"]
    judge_condition(f, sol, opts, op)
    if (info["accepted"] or not np.all(np.isfinite(sol.alpha))
            or not pinv_allowed(n, lam, opts) or tiled):
        return sol
    # The factor succeeded but its solve missed the limit: K is nearly singular. Whichever
    # of it and K^+ y leaves the smaller residual is returned. Measured: digits, sigma =
    # 1000, n = 250: Cholesky 1.2e-3, K^+ y 0.3 (kept: Cholesky); two points 1e-12 apart:
    # Cholesky 2.3 (worse than alpha = 0), K^+ y interpolates.
    restore_lower(K, k_diag)
    try:
        alt = solve_pinv(K, k_diag, Y, opts, dict(timings),
                          reason=f"the Cholesky solve left relative residual "
                                 f"{sol.relative_residual:.2e}")
    except NotPositiveDefiniteError:      # no room for the eigendecomposition: keep Cholesky
        return sol
    if alt.relative_residual < sol.relative_residual:
        return alt
    sol.info["pinv_relative_residual"] = alt.relative_residual
    return sol


def _tile(K, n: int, opts: Options) -> int:
    """The factor's tile: the store's own, LAPACK's on the host, the device tile on a GPU."""
    if isinstance(K, HostTileStore):
        return K.tile
    if backend_of(K).name == "numpy":
        return host_tile(n, opts.tile_size, np.dtype(backend_of(K).dtype_name(K)).itemsize)
    return device_tile(n, opts.tile_size)


def solve_matrix_free(kernel, X, Y, *, lam: float = 0.0,
                      options: Options | None = None) -> Solution:
    """Nyström-preconditioned block CG with K's blocks recomputed every iteration."""
    opts = options or Options()
    Y = np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
    dtype = working_dtype(opts.dtype, len(X))
    op = KernelOperator(kernel, X, shift=lam + numeric_jitter(opts.jitter), dtype=dtype,
                        block_size=opts.block_size)
    sol = _cg(op, Y, opts, {})
    if sol.info.get("singular"):
        sol.info["singular"]["solver"] = "solver='cg-matrix-free' (K is never stored)"
    return check_solution(sol, limit=max(2 * opts.tol, residual_limit(dtype, len(X))),
                          options=opts, dtype=dtype,
                          explain_nonfinite=lambda: "the kernel of X overflowed or X is not "
                                                    "finite in " + dtype)


def _cg(op, Y, opts: Options, timings: dict) -> Solution:
    """Block CG on ``op`` (StoredOperator, KernelOperator or the Dask operator).

    The preconditioner is the one ``solver="pcg"`` builds (``Options.precond``,
    ``precond_rank``; the eigen sketch sized by :func:`~kernelfit.engine.solvers.pcg.sketch_budget`,
    its automatic rank raised to CG_MIN_RANK where that fits), read from
    ``op.row_block``: rows of the stored K, or kernel blocks recomputed from the
    data when K is never stored.
    """
    from kernelfit.engine.solvers.pcg import make_preconditioner, sketch_budget
    n = op.shape[0]
    # A matrix-free K takes no memory: the sketch's budget is not net of it.
    k_item = 0 if isinstance(op, KernelOperator) else np.dtype(op.dtype).itemsize
    budget = sketch_budget(n, k_item, opts, gram_allocated=True)
    t = time.perf_counter()
    pre = make_preconditioner(op, _cg_rank(n, opts, budget), budget_bytes=budget)
    timings["precond"] = time.perf_counter() - t
    t = time.perf_counter()
    alpha, info = block_cg(op, Y, tol=opts.tol, max_iter=opts.max_iter, precond=pre)
    timings["solve"] = time.perf_counter() - t
    info = {"jitter": numeric_jitter(opts.jitter), **info,
            "preconditioner": pre.info if pre is not None else {"preconditioner": "none"}}
    sol = measure(op, alpha, Y, dict(timings=timings, info=info, iterations=info["iterations"]))
    singular = singular_evidence(info, op.shift, "CG")
    if singular:
        info["singular"] = singular
    if not info["converged"]:
        its = info["iterations"]
        why = (f"stopped after {its} iteration{'s' * (its != 1)} (max_iter) at relative "
               f"residual {max(info['residuals']):.2e}, short of tol={opts.tol:g}")
        if info.get("breakdown"):
            why = (f"broke down after {its} iteration{'s' * (its != 1)} (a search direction "
                   "with p^T K p <= 0: K is singular or not positive definite in "
                   f"working precision) at relative residual {sol.relative_residual:.2e}")
        sol.converged = False
        sol.warnings.append(f"CG did not converge: it {why}. Raise --max-iter / max_iter, "
                            "loosen --tol / tol, pass --lam / lam > 0, or use --solver "
                            "cholesky / solver='cholesky'.")
    return sol


def _cg_rank(n: int, opts: Options, budget: float) -> Options:
    """``opts`` with the cg solvers' floor on the eigen preconditioner's rank (CG_MIN_RANK).

    Only an automatic rank (``precond_rank=None``) is raised, and only while the
    sketch of the floor fits ``budget``; pcg's own rule is not touched.
    """
    if opts.precond != "eigen" or opts.precond_rank is not None:
        return opts
    floor = min(CG_MIN_RANK, n)
    if choose_sketch(n, budget)[1] >= floor or sketch_bytes(n, min(n, 2 * floor), floor) > budget:
        return opts
    return replace(opts, precond_rank=floor)


def _pcg(K, Y, shift: float, opts: Options) -> Solution:
    from kernelfit.engine.solvers.pcg import PanelOperator, pcg_solve
    alpha, info = pcg_solve(K, Y, shift=shift, options=opts)
    timings = info.pop("timings")
    info = {"jitter": numeric_jitter(opts.jitter), **info}
    # The residual and K alpha through the same float32 pass as the iterations: its
    # rounding (~eps32 ||K|| ||alpha|| / ||Y||) is far below what PCG is asked to reach.
    sol = measure(PanelOperator(K, shift), alpha, Y,
                   dict(timings=timings, info=info, iterations=info["iterations"]))
    # Validation stopping returns an early-stopped iterate on purpose: no singular rule.
    singular = None if "val_size" in info else singular_evidence(info, shift, "PCG")
    if singular:
        info["singular"] = singular
    if not info["converged"]:
        its = info["iterations"]
        if "val_size" in info:
            why = (f"stopped early on purpose (validation rule): {info['stopping']}; not an "
                   "interpolant. For an exact fit drop --val-fraction / val_fraction and set "
                   "--tol / tol")
        elif info.get("breakdown"):
            why = (f"broke down after {its} iterations (p^T K p <= 0: K is singular or not "
                   f"positive definite in {K.dtype.name}) at relative residual "
                   f"{sol.relative_residual:.2e}. Pass --lam / lam > 0 or use --solver cholesky")
        else:
            why = (f"stopped after {its} iterations (max_iter) at relative residual "
                   f"{max(info['residuals']):.2e}, short of tol={opts.tol:g}. Raise --max-iter "
                   "/ max_iter, loosen --tol / tol, or pass --lam / lam > 0")
        sol.converged = False
        sol.warnings.append(f"PCG did not converge: it {why}.")
    return sol


def _raise_if_nonfinite_stored(K, k_diag) -> None:
    why = _nonfinite_in_stored(K, k_diag)
    if why:
        raise NonFiniteError(f"{why}. Rescale X (e.g. sklearn.preprocessing.StandardScaler) "
                             "or use dtype='float64'.")


def _nonfinite_in_stored(K, k_diag, step: int = 1024) -> str:
    """Where K (its diagonal and strict upper triangle) is not finite; "" if it is.

    Reads K once in row blocks (copied to the host block by block from a
    device); only called once something has gone wrong, so the hot path never
    pays for it. A streamed tile store is judged by its diagonal only.
    """
    tiled = isinstance(K, HostTileStore)
    n = K.n if tiled else int(K.shape[0])
    be = None if tiled else backend_of(K)
    bad = np.flatnonzero(~np.isfinite(k_diag))
    first = (int(bad[0]), int(bad[0])) if bad.size else None
    for r0 in range(0, 0 if tiled else n, step):
        if first is not None:
            break
        blk = ~np.isfinite(be.to_host(K[r0:r0 + step, r0:]))
        m = blk.shape[0]
        blk[:, :m] &= np.triu(np.ones((m, m), dtype=bool), 1)   # lower part: the factor
        if blk.any():
            i, j = np.argwhere(blk)[0]
            first = (r0 + int(i), r0 + int(j))
    if first is None:
        return ""
    i, j = first
    value = k_diag[i] if i == j else float(be.to_host(K[i:i + 1, j:j + 1])[0, 0])
    dtype = K.dtype if tiled else be.dtype_name(K)
    return (f"K has non-finite entries (first K[{i}, {j}] = {value}): the kernel overflowed "
            f"in {dtype}, or the given K was not finite")

"""The solves on the tiled K: Dask's blocked Cholesky, and CG with products on the workers."""

from __future__ import annotations

import time

import numpy as np

from kernelfit.distributed.cluster import cluster_summary, connect, plan_distributed, require_dask
from kernelfit.distributed.gram import build_gram_dask, shift_diagonal, tiling
from kernelfit.engine.kernels import Kernel, row_sq_norms
from kernelfit.engine.sizes import working_dtype
from kernelfit.engine.solvers.cholesky import AUTO_JITTER
from kernelfit.engine.solvers.refine import refine
from kernelfit.engine.solvers.solution import (
    Solution,
    check_solution,
    measure,
    numeric_jitter,
    residual_limit,
)
from kernelfit.engine.solvers.solve import _cg
from kernelfit.errors import InputError, NotPositiveDefiniteError
from kernelfit.options import Options

DASK_SOLVERS = ("cholesky", "cg")


class DaskOperator:
    """(K + shift I) V for a K whose tiles live on the workers.

    Each product is one Dask graph: tile (I, J) times V's block J runs on the
    worker that holds the tile (the tile is the big input, so the scheduler
    sends V there), and the row sums are reduced on the workers; only the
    n x c result comes back. Products are float64 (a float32 tile is upcast a
    tile at a time), as :class:`kernelfit.engine.storage.operators.StoredOperator`.
    """

    def __init__(self, client, K, n: int, t: int, k_diag, shift: float, dtype):
        # The client is explicit: Dask's default scheduler is whichever client was made
        # last in this process, which need not be the cluster that holds K.
        self.client, self.K, self.n, self.t = client, K, n, t
        self.k_diag = np.asarray(k_diag, dtype=np.float64)
        self.shift = float(shift)
        self.shape = (n, n)
        self.dtype = np.dtype(dtype)

    def __matmul__(self, V):
        import dask.array as da

        V = np.asarray(V, dtype=np.float64)
        one_d = V.ndim == 1
        V2 = V.reshape(self.n, -1)
        P = np.zeros((self.K.shape[0], V2.shape[1]))
        P[:self.n] = V2
        KP = self.K @ da.from_array(P, chunks=(self.t, P.shape[1]))
        out = self.client.compute(KP).result()[:self.n]
        out = out.astype(np.float64, copy=False) + self.shift * V2
        return out[:, 0] if one_d else out

    def diagonal(self):
        return self.k_diag + self.shift

    def row_block(self, idx) -> np.ndarray:
        """K[idx, :] (without the shift, in K's dtype), gathered from the tiles that hold them."""
        idx = np.asarray(idx)
        rows = self.client.compute(self.K[idx, :]).result()
        return np.asarray(rows[:, :self.n], dtype=self.dtype)


# -- the solves -----------------------------------------------------------------------------------
def solve_distributed(kernel: Kernel, X, Y, *, lam: float = 0.0, solver: str = "cholesky",
                      options: Options | None = None, client=None) -> Solution:
    """Solve (K + lam I) alpha = Y with K built and solved on a Dask cluster.

    Parameters
    ----------
    kernel : Kernel
    X : ndarray (n, d)
    Y : ndarray (n,) or (n, c)
    solver : {"cholesky", "cg"}
        Dask's blocked Cholesky, or the Nyström-preconditioned block CG with
        products on the workers.
    options : Options
        ``scheduler`` ("local" or "tcp://host:port") when ``client`` is not
        given; ``dtype``, ``tile_size`` (tile width, default 2,048), ``jitter``,
        ``tol`` / ``max_iter`` (CG), ``strict``.
    client : distributed.Client, optional
        An open client to use instead of connecting to ``options.scheduler``.

    The result has passed :func:`kernelfit.engine.solvers.solve.check_solution`;
    ``Solution.info["dask"]`` records the cluster, the tiling and how the
    Gram build was spread over the workers.
    """
    opts = options or Options()
    if solver not in DASK_SOLVERS:
        raise InputError(f"a Dask solve runs solver 'cholesky' or 'cg', got {solver!r}; drop "
                         "--scheduler / Options.scheduler for the other solvers")
    if solver == "cg" and opts.jitter == "auto":
        raise InputError("jitter='auto' retries a failed Cholesky; a CG solve takes a number "
                         "(or lam > 0)")
    require_dask()
    X = np.asarray(X)
    n = len(X)
    Y = np.asarray(Y, dtype=np.float64).reshape(n, -1)
    if client is None:
        if opts.scheduler is None:
            raise InputError("solve_distributed needs a client or Options(scheduler='local' "
                             "or 'tcp://host:port')")
        with connect(opts.scheduler) as own:
            return solve_distributed(kernel, X, Y, lam=lam, solver=solver, options=opts,
                                     client=own)
    dtype = np.dtype(working_dtype(opts.dtype, n))
    kernel.check_dtype(dtype)
    t, T = tiling(n, opts.tile_size)
    summary = cluster_summary(client)
    plan_bytes = plan_distributed(n, t, T, dtype, Y.shape[1], summary,
                                  local=opts.scheduler == "local")

    K, gram_s, spread = build_gram_dask(client, X, kernel, dtype=dtype, t=t, T=T)
    Xd = np.ascontiguousarray(X, dtype=dtype)
    k_diag = kernel.diag(Xd, row_sq_norms(Xd))
    info = {"dask": {**summary, "tile": t, "tiles_per_side": T, "padding": T * t - n,
                     "plan_bytes": plan_bytes, "gram": spread}}
    timings = {"gram": gram_s}
    try:
        if solver == "cholesky":
            sol = _solve_cholesky(client, K, k_diag, Y, n, t, lam, opts, timings, info)
            limit = residual_limit(dtype, n)
        else:
            op = DaskOperator(client, K, n, t, k_diag, lam + numeric_jitter(opts.jitter),
                              dtype)
            sol = _cg(op, Y, opts, timings)
            sol.info.update(info)
            limit = max(2 * opts.tol, residual_limit(dtype, n))
    finally:
        client.cancel(K)          # the tiles leave the workers' memory
    return check_solution(sol, limit=limit, options=opts, dtype=dtype,
                          explain_nonfinite=lambda: f"the kernel overflowed in {dtype.name} "
                                                    "or X is not finite")


def _solve_cholesky(client, K, k_diag, Y, n: int, t: int, lam: float, opts: Options,
                    timings: dict, info: dict) -> Solution:
    """Dask's blocked Cholesky of K + (lam + jitter) I, then the two triangular solves."""
    import dask.array as da
    from distributed import wait

    scale = float(np.mean(k_diag)) or 1.0
    if opts.jitter == "auto":
        levels = [rel * scale for rel in AUTO_JITTER]   # the in-memory solver's schedule
    else:
        levels = [numeric_jitter(opts.jitter)]
    attempts = []
    for level, jitter in enumerate(levels):
        shift = lam + jitter
        A = shift_diagonal(K, shift, n, t)
        t0 = time.perf_counter()
        try:
            # One graph name for both triangles: computed together, L^T is not refactored.
            L = da.linalg.cholesky(A, lower=True)
            U = da.linalg.cholesky(A, lower=False)
            L, U = client.persist([L, U])
            wait([L, U])
            # Dask raises a task's error on the client when its result is gathered.
            client.compute(L.blocks[-1, -1]).result()
        except np.linalg.LinAlgError as err:
            attempts.append({"jitter": jitter, "pivot": None, "error": str(err)})
            if level < len(levels) - 1:
                continue
            raise NotPositiveDefiniteError(
                pivot=None, n=n, dtype=K.dtype,
                detail=f" (Dask's blocked Cholesky with shift {shift:.3g}: {err})") from None
        timings["factor"] = time.perf_counter() - t0
        t0 = time.perf_counter()

        def solve(R, L=L, U=U):
            P = np.zeros((K.shape[0], R.shape[1]))
            P[:n] = R
            Z = da.linalg.solve_triangular(L, da.from_array(P, chunks=(t, P.shape[1])),
                                           lower=True)
            return client.compute(da.linalg.solve_triangular(U, Z, lower=False)).result()[:n]

        alpha = np.asarray(solve(Y), dtype=np.float64)
        timings["solve"] = time.perf_counter() - t0
        op = DaskOperator(client, K, n, t, k_diag, shift, K.dtype)
        info = {**info, "jitter": jitter, "jitter_attempts": attempts,
                "residual_against": f"the stored K tiles ({K.dtype.name}) on the cluster"}
        if opts.refine_steps:
            # Residuals where the tiles live, corrections from the cluster's factor.
            t0 = time.perf_counter()
            alpha, info["refine_history"], info["refine_stop"] = refine(
                solve, op, Y, alpha, opts.refine_steps)
            timings["refine"] = time.perf_counter() - t0
        del L, U, solve           # the factor leaves the workers before the residual
        return measure(op, alpha, Y, dict(timings=timings, info=info))
    raise AssertionError("unreachable: the last level raises")

"""K alpha = Y on a Dask cluster: the Gram built in tiles where it will be solved.

For a K bigger than one machine, or more cores than one process uses. Three
steps, all on the cluster's workers:

1. **Gram tiles.** X and its squared norms are scattered once to every worker;
   each upper tile K[I, J] (I <= J) is one task, :meth:`Kernel.block` on the
   worker's copy of X (the project's kernel maps, nothing re-implemented). A
   lower tile is the transpose of its mirror, so K is exactly symmetric and
   each block is computed once. The tiles stay on the workers as one
   ``dask.array`` of t x t chunks.
2. **Exact solve.** Dask's own blocked ``dask.array.linalg.cholesky`` and two
   ``solve_triangular`` on that tiled K. Dask's Cholesky wants equal square
   chunks, so when t does not divide n, K is padded to T t rows with an
   identity block: diag(K, I) factors into diag(L, I), and the padded rows of
   Y (zeros) give exactly zero in alpha, so nothing of the answer changes.
3. **CG.** The project's Nyström-preconditioned block CG
   (:func:`kernelfit.solvers.solve._cg`) with an operator whose products
   ``K @ V`` are Dask tasks: each tile's product runs on the worker that holds
   the tile, and only n x c blocks travel.

Either way the answer goes through :func:`kernelfit.solvers.solve.check_solution`,
the same quality gate as the in-memory solves (finiteness, residual limit of
the working dtype, CG convergence).

Nothing here imports Dask at module level: ``kernelfit`` without
``--scheduler`` / ``Options.scheduler`` never loads it.
"""

from __future__ import annotations

import contextlib
import math
import os
import time

import numpy as np

from .errors import InputError, MissingDependencyError, NotPositiveDefiniteError, PlanError
from .gram import mirror_panel
from .kernels import Kernel, row_sq_norms
from .options import Options
from .plan import available_memory, human_bytes
from .solvers.cholesky import AUTO_JITTER
from .solvers.solve import (
    Solution,
    _cg,
    _measure,
    _numeric_jitter,
    check_solution,
    residual_limit,
)

DASK_SOLVERS = ("cholesky", "cg")
# Tile width when Options.tile_size is not given: a 2,048^2 float64 tile is 32 MB,
# a Cholesky task of ~3 GFLOP (a fraction of a second per core), so the scheduler's
# per-task overhead (~1 ms) is noise, and n = 20,000 gives 10 x 10 tiles: enough
# tasks to keep every worker of a small cluster busy.
DEFAULT_TILE = 2048
# Seconds to wait for a --scheduler ADDRESS to answer before giving up.
CONNECT_TIMEOUT_S = 10


def tiling(n: int, tile_size: int | None = None) -> tuple[int, int]:
    """(t, T): tile width and tiles per side, T t >= n with less than one tile of padding.

    t is the target width evened out over the T tiles (n = 20,000 with the
    target 2,048 gives 10 tiles of 2,000: no padding at all).
    """
    target = int(tile_size or DEFAULT_TILE)
    T = max(1, math.ceil(n / target))
    t = math.ceil(n / T)
    return t, math.ceil(n / t)


# -- the cluster ------------------------------------------------------------------------------
def require_dask() -> None:
    """Raise :class:`MissingDependencyError` (naming the ``dask`` extra) when Dask is absent."""
    try:
        import dask.array  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(err.name or "distributed", "dask",
                                     "a Dask solve (--scheduler / Options.scheduler)") from err


@contextlib.contextmanager
def connect(scheduler: str):
    """A ``distributed.Client`` for ``scheduler`` ("local" or "tcp://host:port"), closed after.

    "local" starts a LocalCluster of one single-threaded worker process per
    core (BLAS inside each worker is then single-threaded too, so the cores
    are not oversubscribed) and shuts it down on exit. An address connects
    to a running cluster, whose workers must be able to import kernelfit.
    """
    Options(scheduler=scheduler)          # the one validation of the value
    require_dask()
    from distributed import Client, LocalCluster

    if scheduler == "local":
        with LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1,
                          processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as err:
        raise InputError(
            f"no Dask scheduler answered at {scheduler} within {CONNECT_TIMEOUT_S} s ({err}). "
            "Start one there (`dask scheduler`, then `dask worker ADDRESS` on each machine, "
            "with kernelfit installed), check the address, or use --scheduler local / "
            "Options(scheduler='local') for a cluster on this machine.") from None
    with client:
        yield client


def cluster_summary(client) -> dict:
    """Workers, threads and memory of the cluster, for the record."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {"scheduler": client.scheduler.address, "workers": len(workers),
            "threads": sum(w["nthreads"] for w in workers.values()),
            "memory_limit_bytes": sum(w.get("memory_limit") or 0 for w in workers.values())}


def plan_distributed(n: int, t: int, T: int, dtype, n_outputs: int, summary: dict, *,
                     local: bool) -> int:
    """Bytes the cluster will hold; :class:`PlanError` when its workers cannot.

    K (stored whole, both triangles; a lower tile is a view of its mirror on the
    worker that holds both, but Dask counts it) plus, for the Cholesky, L and
    L^T tiles, and per worker a few tile-sized temporaries of the block updates.
    ``local``: the workers share this machine, so what is free here also bounds them
    (a LocalCluster's memory limits split the total RAM, not the free RAM).
    """
    item = np.dtype(dtype).itemsize
    N = T * t
    need = 3 * N * N * item + summary["workers"] * 4 * t * t * 8 + 8 * N * n_outputs * 6
    limit = summary["memory_limit_bytes"]
    if local:
        free = int(0.9 * available_memory())
        limit = min(limit, free) if limit else free
    if limit and need > limit:
        raise PlanError(
            f"a Dask solve of n={n:,} in {np.dtype(dtype).name} needs about "
            f"{human_bytes(need)} on the workers (K, its Cholesky factor L and L^T in "
            f"{T} x {T} tiles of {t:,}), but the {summary['workers']} workers may hold "
            f"{human_bytes(limit)}. Add workers or memory, or use --dtype float32 / "
            "dtype='float32', or fewer training points.")
    return need


# -- the Gram matrix ----------------------------------------------------------------------------
def _gram_tile(X, sq, kernel: Kernel, n: int, t: int, i: int, j: int) -> np.ndarray:
    """K[I, J] for tiles I <= J (on a worker); padded rows/columns are 0, padded diagonal 1."""
    i0, j0 = i * t, j * t
    i1, j1 = min(i0 + t, n), min(j0 + t, n)
    out = np.zeros((t, t), dtype=X.dtype)
    kernel.block(X[i0:i1], X[j0:j1], sq[i0:i1], sq[j0:j1], out=out[:i1 - i0, :j1 - j0])
    if i == j:
        mirror_panel(out, 0, t)             # exactly symmetric, like the in-memory builder
        diag = np.ones(t)                   # the identity block of the padding
        diag[:i1 - i0] = kernel.diag(X[i0:i1], sq[i0:i1])   # exact k(x, x), as build_gram
        out[np.diag_indices(t)] = diag
    return out


def build_gram_dask(client, X, kernel: Kernel, *, dtype, t: int, T: int):
    """K as a persisted (T t) x (T t) dask array of t x t tiles, built on the workers.

    Returns ``(K, seconds, spread)``: ``spread["workers"]`` maps each worker's
    address to the upper tiles it computed, the seconds its tile tasks ran and
    the CPU seconds its process spent during the build; ``spread["concurrency"]``
    is the tile tasks' total run time over the span from the first start to the
    last stop (2.0: two workers computed side by side all along), a measure of
    how the work was spread that, unlike CPU / wall, other load on the machine
    does not lower.
    """
    import dask.array as da
    from distributed import get_task_stream, wait

    X = np.ascontiguousarray(X, dtype=dtype)
    n = len(X)
    cpu0 = client.run(_process_cpu_seconds)
    t0 = time.perf_counter()
    with get_task_stream(client=client) as stream:
        # Scattered once, to every worker: a tile task then carries only its indices.
        X_f = client.scatter(X, broadcast=True, hash=False)
        sq_f = client.scatter(row_sq_norms(X), broadcast=True, hash=False)
        upper = {(i, j): client.submit(_gram_tile, X_f, sq_f, kernel, n, t, i, j, pure=False)
                 for i in range(T) for j in range(i, T)}
        wait(list(upper.values()))
    seconds = time.perf_counter() - t0
    cpu1 = client.run(_process_cpu_seconds)
    spread = _spread(stream.data, {f.key for f in upper.values()},
                     {w: cpu1[w] - cpu0[w] for w in cpu1})
    blocks = [[None] * T for _ in range(T)]
    for (i, j), fut in upper.items():
        blocks[i][j] = da.from_delayed(fut, shape=(t, t), dtype=X.dtype)
        if i != j:
            blocks[j][i] = blocks[i][j].T   # runs where the upper tile lives: a view there
    K = client.persist(da.block(blocks))
    wait(K)
    return K, seconds, spread


def _spread(stream: list, keys: set, cpu: dict) -> dict:
    """Tiles, task seconds and CPU seconds per worker, and the tasks' mean concurrency."""
    workers = {w: {"tiles": 0, "task_seconds": 0.0, "cpu_seconds": c} for w, c in cpu.items()}
    spans = []
    for task in stream:
        if task["key"] not in keys:
            continue
        for ss in task["startstops"]:
            if ss["action"] == "compute":
                w = workers.setdefault(task["worker"], {"tiles": 0, "task_seconds": 0.0,
                                                        "cpu_seconds": None})
                w["tiles"] += 1
                w["task_seconds"] += ss["stop"] - ss["start"]
                spans.append((ss["start"], ss["stop"]))
    span = max(s for _, s in spans) - min(s for s, _ in spans) if spans else 0.0
    busy = sum(s - b for b, s in spans)
    return {"workers": workers, "task_seconds": busy, "span_seconds": span,
            "concurrency": busy / span if span > 0 else 0.0}


def _process_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _shift_diagonal(K, shift: float, n: int, t: int):
    """K + shift I on the first n rows (the padding keeps its identity), diagonal tiles only."""
    import dask.array as da

    if shift == 0:
        return K
    T = K.numblocks[0]
    blocks = [[K.blocks[i, j] for j in range(T)] for i in range(T)]
    for i in range(T):
        m = min(t, n - i * t)
        blocks[i][i] = blocks[i][i].map_blocks(_add_diag, shift, m, dtype=K.dtype)
    return da.block(blocks)


def _add_diag(tile, shift: float, m: int):
    out = tile.copy()
    idx = np.arange(m)
    out[idx, idx] += out.dtype.type(shift)
    return out


# -- operator for residuals and CG ------------------------------------------------------------
class DaskOperator:
    """(K + shift I) V for a K whose tiles live on the workers.

    Each product is one Dask graph: tile (I, J) times V's block J runs on the
    worker that holds the tile (the tile is the big input, so the scheduler
    sends V there), and the row sums are reduced on the workers; only the
    n x c result comes back. Products are float64 (a float32 tile is upcast a
    tile at a time), as :class:`kernelfit.solvers.operators.StoredOperator`.
    """

    def __init__(self, K, n: int, t: int, k_diag, shift: float, dtype):
        self.K, self.n, self.t = K, n, t
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
        out = (self.K @ da.from_array(P, chunks=(self.t, P.shape[1]))).compute()[:self.n]
        out = out.astype(np.float64, copy=False) + self.shift * V2
        return out[:, 0] if one_d else out

    def diagonal(self):
        return self.k_diag + self.shift

    def columns(self, idx) -> np.ndarray:
        """K[:, idx] (without the shift), gathered from the tiles that hold them."""
        idx = np.asarray(idx)
        return np.asarray(self.K[:, idx].compute()[:self.n], dtype=np.float64)


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

    The result has passed :func:`kernelfit.solvers.solve.check_solution`;
    ``Solution.info["dask"]`` records the cluster, the tiling and how the
    Gram build was spread over the workers.
    """
    opts = options or Options()
    if solver not in DASK_SOLVERS:
        raise InputError(f"a Dask solve runs solver 'cholesky' or 'cg', got {solver!r}; drop "
                         "--scheduler / Options.scheduler for the other solvers")
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
    dtype = np.dtype(opts.resolve_dtype(n))
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
            sol = _solve_cholesky(K, k_diag, Y, n, t, lam, opts, timings, info)
            limit = residual_limit(dtype, n)
        else:
            op = DaskOperator(K, n, t, k_diag, lam + _numeric_jitter(opts.jitter), dtype)
            if opts.jitter == "auto":
                raise InputError("jitter='auto' retries a failed Cholesky; CG takes a number "
                                 "(or use lam > 0)")
            sol = _cg(op, Y, opts, timings)
            sol.info.update(info)
            limit = max(2 * opts.tol, residual_limit(dtype, n))
    finally:
        client.cancel(K)          # the tiles leave the workers' memory
    return check_solution(sol, limit=limit, options=opts, dtype=dtype,
                          explain_nonfinite=lambda: f"the kernel overflowed in {dtype.name} "
                                                    "or X is not finite")


def _solve_cholesky(K, k_diag, Y, n: int, t: int, lam: float, opts: Options,
                    timings: dict, info: dict) -> Solution:
    """Dask's blocked Cholesky of K + (lam + jitter) I, then the two triangular solves."""
    import dask
    import dask.array as da
    from distributed import wait

    scale = float(np.mean(k_diag)) or 1.0
    if opts.jitter == "auto":
        levels = [rel * scale for rel in AUTO_JITTER]   # the in-memory solver's schedule
    else:
        levels = [_numeric_jitter(opts.jitter)]
    attempts = []
    for level, jitter in enumerate(levels):
        shift = lam + jitter
        A = _shift_diagonal(K, shift, n, t)
        t0 = time.perf_counter()
        try:
            # One graph name for both triangles: computed together, L^T is not refactored.
            L = da.linalg.cholesky(A, lower=True)
            U = da.linalg.cholesky(A, lower=False)
            L, U = dask.persist(L, U)
            wait([L, U])
            # Dask raises a task's error on the client when its result is gathered.
            L.blocks[-1, -1].compute()
        except np.linalg.LinAlgError as err:
            attempts.append({"jitter": jitter, "pivot": None, "error": str(err)})
            if level < len(levels) - 1:
                continue
            raise NotPositiveDefiniteError(
                pivot=None, n=n, dtype=K.dtype,
                detail=f" (Dask's blocked Cholesky with shift {shift:.3g}: {err})") from None
        timings["factor"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        P = np.zeros((K.shape[0], Y.shape[1]))
        P[:n] = Y
        Z = da.linalg.solve_triangular(L, da.from_array(P, chunks=(t, P.shape[1])), lower=True)
        alpha = da.linalg.solve_triangular(U, Z, lower=False).compute()[:n]
        timings["solve"] = time.perf_counter() - t0
        del L, U
        op = DaskOperator(K, n, t, k_diag, shift, K.dtype)
        info = {**info, "jitter": jitter, "jitter_attempts": attempts}
        return _measure(op, np.asarray(alpha, dtype=np.float64), Y,
                        dict(timings=timings, info=info))
    raise AssertionError("unreachable: the last level raises")

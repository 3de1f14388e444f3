"""Block PCG on a stored K at the speed of one pass over K per iteration.

Every iteration is one product K @ P of the stored K with the n x c block of
search directions, all c one-vs-rest outputs together. The product runs in
K's own dtype (a float32 K is read once, by SGEMM over row panels, never
upcast: that upcast made :class:`~kernelfit.engine.storage.operators.StoredOperator`
3x slower than memory allows); the n x c results, the step sizes, every
reduction and every residual check are float64.

Stopping, one rule per solve, recorded in ``info["stopping"]``:

* ``tol``: every column's relative residual ||r_j|| / ||y_j|| <= tol;
* validation (``Options.val_fraction > 0``): a random, class-stratified
  ``val_fraction`` of the training points is held out of the system, its
  classification error is measured after each iteration from the held-out
  rows of K (no test data is ever seen), and the run stops once
  ``Options.patience`` iterations have brought no improvement, and not before
  ``Options.val_min_iter`` iterations; t* is the iteration with the lowest
  validation error. Then the *refit*: PCG on all n
  points (the same preconditioner kind, built for the full system) for t*
  iterations, or to ``tol`` if that comes first, so no training point is left
  out of the returned alpha. Unless the refit reaches ``tol`` the result is
  not an interpolant, and the solution says so.

  Measured on MNIST (sigma 5, float32, ``benchmarks/study_pcg_stopping.py``,
  results in ``benchmarks/results/study_pcg_stopping_*``; test errors there
  are measurements, never inputs to the rule), val_fraction 0.1:

  - the refit against returning the held-out model: at n = 20,000 (five
    splits) 1.88% mean test error against 1.93% (exact Cholesky: 1.95%); the
    held-out model, 10% of its data unfitted, levels off ~0.1% above the
    full-data iterates. At n = 60,000 (three splits) the refit at t* gave
    1.19, 1.15, 1.19% (exact float32 Cholesky: 1.22%, bench_solve_60k_cpu.json).
  - cold against warm: a refit warm-started from the held-out solution has
    no t* of its own and was no better (n = 20,000: 1.94% after one
    iteration, 1.89% after five, against 1.88% for the cold refit at t*).
  - the rule (first strict minimum, patience 5, at least 10 iterations),
    replayed on the same curves against ties to later iterations, patience
    10 or growing with t*, at least 20 iterations: at val_fraction 0.1 the
    test-error curve of CG oscillates by ~0.2% at n = 60,000, the validation
    curve follows it, and later choices landed on its bumps (20,000: 1.88%
    mean against up to 1.92%; 60,000: 1.18% against up to 1.19%), at more
    iterations. At val_fraction 0.02 (1,199 held-out points) the validation
    curve is too noisy for patience 5 alone (one split stopped at iteration
    7 on t* = 2: mean 1.45% over three splits); the 10-iteration minimum
    took that mean to 1.30% and changed no choice at 0.1 (ties to later with
    patience 10 or 20 iterations reached 1.25% there, but were the worse
    ones at 0.1). A held-out set of
    a few thousand points (val_fraction 0.1 on MNIST) is what makes t*
    reliable, and the refit makes it cost no training data.

``info["history"]`` holds, per iteration, the largest relative residual of
the columns and, with validation, the validation error.
"""

from __future__ import annotations

import time

import numpy as np

from kernelfit.engine.sizes import PCG_PANEL_ROWS, SKETCH_SHARE, host_limit
from kernelfit.engine.solvers.cg import block_cg
from kernelfit.engine.solvers.precond import (
    JacobiPreconditioner,
    TopEigenPreconditioner,
    choose_sketch,
    sketch_bytes,
)
from kernelfit.errors import InputError
from kernelfit.options import Options


def sketch_budget(n: int, itemsize: int, opts: Options, *, gram_allocated: bool) -> float:
    """Bytes the eigen preconditioner may use: SKETCH_SHARE of the memory besides K.

    ``gram_allocated``: K already exists (at solve time), so what is available
    now is already net of it.
    """
    allocated = gram_allocated and opts.memory_limit is None
    free = host_limit(opts.memory_limit) - (0 if allocated else n * n * itemsize)
    return max(SKETCH_SHARE * free, 0.0)


class PanelOperator:
    """(K + shift I) V for a K stored whole (both triangles), in K's dtype.

    ``rows`` (optional, sorted indices) restricts the operator to the
    subsystem K[rows, rows]: V is scattered into the full length (zeros
    elsewhere) and the rows of the result gathered; a pass over K still reads
    every row, which costs the held-out fraction of a pass, no copy of K.
    """

    def __init__(self, K, shift: float = 0.0, rows=None, panel_rows: int = PCG_PANEL_ROWS):
        if K.ndim != 2 or K.shape[0] != K.shape[1]:
            raise InputError(f"K must be a square matrix, got shape {K.shape}")
        self.K = K
        self.shift = float(shift)
        self.rows = None if rows is None else np.asarray(rows)
        m = K.shape[0] if rows is None else len(self.rows)
        self.shape = (m, m)
        self.dtype = K.dtype
        self.panel_rows = int(panel_rows)

    def product(self, P):
        """K @ P over all of K's rows (P full length, K's dtype), float64 result."""
        n = self.K.shape[0]
        out = np.empty((n, P.shape[1]))
        for r0 in range(0, n, self.panel_rows):
            r1 = min(r0 + self.panel_rows, n)
            out[r0:r1] = self.K[r0:r1] @ P
        return out

    def __matmul__(self, V):
        V = np.asarray(V, dtype=np.float64)
        one_d = V.ndim == 1
        V2 = V.reshape(len(V), -1)
        if self.rows is None:
            P = V2.astype(self.dtype)
            Y = self.product(P)
        else:
            P = np.zeros((self.K.shape[0], V2.shape[1]), dtype=self.dtype)
            P[self.rows] = V2
            Y = self.product(P)[self.rows]
        if self.shift:
            Y += self.shift * V2
        return Y[:, 0] if one_d else Y

    def diagonal(self):
        d = np.asarray(self.K.diagonal(), dtype=np.float64)
        d = d if self.rows is None else d[self.rows]
        return d + self.shift

    def row_block(self, idx):
        """K[idx, :] restricted to the operator's columns (K's dtype); idx in its numbering."""
        full = idx if self.rows is None else self.rows[idx]
        R = self.K[full]
        return R if self.rows is None else R[:, self.rows]


def _split(n: int, fraction: float, labels, seed: int):
    """Held-out rows for early stopping: a random, class-stratified ``fraction`` of n."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = int(round(fraction * len(members)))
        held.append(rng.choice(members, size=k, replace=False))
    val = np.sort(np.concatenate(held))
    if len(val) == 0 or len(val) == n:
        raise InputError(f"Options.val_fraction={fraction:g} of n={n:,} points leaves "
                         f"{len(val)} validation and {n - len(val)} training points; choose a "
                         "fraction that keeps some of each (e.g. 0.02)")
    return np.setdiff1d(np.arange(n), val), val


def make_preconditioner(op, opts: Options, *, budget_bytes: float, seed: int = 0):
    """The preconditioner ``opts.precond`` names (None for "none"), for every CG solver.

    ``op`` is any operator with ``shape``, ``shift``, ``dtype``, ``diagonal()`` and
    ``row_block(idx)`` (K[idx, :]): the stored K's :class:`PanelOperator` or
    :class:`~kernelfit.engine.storage.operators.StoredOperator`, the matrix-free
    :class:`~kernelfit.engine.storage.operators.KernelOperator`, or Dask's tiles.
    """
    if opts.precond == "none":
        return None
    if opts.precond == "jacobi":
        return JacobiPreconditioner(op.diagonal())
    n = op.shape[0]
    sketch, rank = choose_sketch(n, budget_bytes, opts.precond_rank)
    return TopEigenPreconditioner(op.row_block, n, op.shift, sketch=sketch, rank=rank, seed=seed,
                                  eps=float(np.finfo(op.dtype).eps))


class ValidationStop:
    """The early-stopping rule on the validation errors, one iteration at a time.

    t* is the first iteration at the lowest error so far (ties stay with the
    earlier one); the run stops once ``patience`` iterations have not beaten
    it, but not before ``min_iter`` iterations (see ``Options.val_min_iter``).
    """

    def __init__(self, patience: int, min_iter: int = 0):
        self.patience = int(patience)
        self.min_iter = int(min_iter)
        self.best = np.inf
        self.best_it = 0

    def update(self, it: int, err: float) -> bool:
        """Record iteration ``it``'s validation error; True: stop here."""
        if err < self.best:
            self.best, self.best_it = err, it
        return it >= self.min_iter and it - self.best_it >= self.patience

    def describe(self) -> str:
        return (f"first lowest error, patience={self.patience} iterations without improvement "
                f"after at least {self.min_iter}")


def pcg_solve(K, Y, *, shift: float = 0.0, options: Options | None = None,
              budget_bytes: float | None = None, seed: int = 0, monitor=None):
    """Solve (K + shift I) alpha = Y by block PCG; returns ``(alpha, info)`` (float64 alpha).

    Parameters
    ----------
    K : ndarray (n, n), both triangles filled (float32 or float64; not modified)
    Y : ndarray (n, c): one-hot or +-1 targets; with validation stopping, the
        classes are read as ``argmax`` of each row.
    shift : float
    options : Options (precond, precond_rank, tol, max_iter, val_fraction, patience)
    budget_bytes : memory the preconditioner's sketch may take (default:
        :func:`sketch_budget`)
    monitor : callable (iteration, alpha) -> bool, optional
        Sees each iterate (alpha over all n rows) after the stopping rule has;
        True stops the solve there. With validation stopping it sees the
        validation run's iterates (held-out rows 0), not the refit's. For
        benchmarks that trace an outside measure (e.g. test error, as
        EigenPro's time-to-accuracy is measured); it takes no part in the
        stopping rule.

    ``info``: iterations, converged, residuals (of the returned alpha), stopping
    (the rule, in words), history (one dict per iteration: iteration, seconds
    since the first began, the largest relative residual of the columns,
    val_error), preconditioner (its kind, rank, sketch, mu), timings (precond,
    iterations). With validation, ``iterations`` and ``history`` are the
    validation run's, and: val_size, val_index (the held-out rows),
    best_iteration (t*), val_error, returned_iteration, and ``refit`` (the
    refit on all n points: iterations, residual, residuals, converged,
    history, preconditioner; its time is timings["refit"]).
    """
    opts = options or Options()
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y.reshape(len(Y), -1)
    n = K.shape[0]
    if Y.shape[0] != n:
        raise InputError(f"Y has {Y.shape[0]} rows but K is {n} x {n}")
    if budget_bytes is None:
        budget_bytes = sketch_budget(n, K.dtype.itemsize, opts, gram_allocated=True)
    if not opts.val_fraction:
        on_iterate = None if monitor is None else lambda it, X, record: monitor(it, X)
        return _run(PanelOperator(K, shift), Y, opts, budget_bytes, seed, on_iterate)
    rows, val = _split(n, opts.val_fraction, np.argmax(Y, axis=1), seed)
    rule, vinfo = validation_run(K, Y, shift, rows, val, opts, budget_bytes, seed, monitor)
    # t*: the validation run's choice (at least one iteration: a run that converged
    # before the rule chose refits to tol, which it then reaches as fast).
    t_star = max(rule.best_it or vinfo["iterations"], 1)
    # The refit: the same method on all n points (no held-out point left at
    # alpha = 0), stopped where validation said. Cold, not warm from the held-out
    # solution: a cold start's first t* iterates are what the validation run
    # scored (benchmarks/study_pcg_stopping.py measured both).
    X, rinfo = _run(PanelOperator(K, shift), Y, opts, budget_bytes, seed, max_iter=t_star)
    refit = {k: rinfo[k] for k in ("iterations", "converged", "breakdown", "residuals",
                                   "history", "preconditioner")}
    refit["residual"] = max(refit["residuals"])
    timings = dict(vinfo["timings"], refit_precond=rinfo["timings"]["precond"],
                   refit=rinfo["timings"]["iterations"])
    reached = ("reached tol" if refit["converged"] else
               f"stopped at t*={t_star} with relative residual {refit['residual']:.2e}")
    chosen = (f"the iteration with the lowest classification error ({rule.best:.2%})"
              if rule.best_it else "no iteration scored: the validation run met tol at once")
    ended = ("stopped by the rule" if vinfo["stopped_by_callback"] else
             "the validation run reached tol" if vinfo["converged"] else
             f"the validation run reached max_iter={opts.max_iter}")
    stopping = (f"validation: t*={t_star}, {chosen} on {len(val):,} held-out training points "
                f"(val_fraction={opts.val_fraction:g}; {rule.describe()}; {ended} after "
                f"{vinfo['iterations']} iterations); then refit on all {n:,} points for t* "
                f"iterations (or to tol={opts.tol:g}): {reached}")
    info = dict(vinfo, converged=refit["converged"], breakdown=refit["breakdown"],
                residuals=refit["residuals"], stopping=stopping, timings=timings, refit=refit,
                val_size=len(val), val_index=val.tolist(), best_iteration=t_star,
                val_error=rule.best if rule.best_it else None,
                returned_iteration=refit["iterations"])
    return X, info


def _run(op: PanelOperator, Y, opts: Options, budget_bytes: float, seed: int,
         on_iterate=None, max_iter: int | None = None):
    """PCG on ``op`` to tol (or ``max_iter``): ``(X, info)`` with history and timings.

    ``on_iterate(iteration, X, record)`` may add to the iteration's history
    record; True stops the run there.
    """
    t = time.perf_counter()
    pre = make_preconditioner(op, opts, budget_bytes=budget_bytes, seed=seed)
    timings = {"precond": time.perf_counter() - t}
    history = []

    def callback(it, X, rel):
        record = {"iteration": it, "seconds": time.perf_counter() - t0,
                  "relative_residual": float(rel.max())}
        history.append(record)
        return on_iterate is not None and bool(on_iterate(it, X, record))

    t = t0 = time.perf_counter()     # history's "seconds": since the iterations began
    X, info = block_cg(op, Y, tol=opts.tol,
                       max_iter=opts.max_iter if max_iter is None else max_iter, precond=pre,
                       callback=callback)
    timings["iterations"] = time.perf_counter() - t
    info.pop("history")        # the per-iteration records above say more
    info.update(stopping=f"relative residual <= tol={opts.tol:g} in every column, or max_iter",
                history=history, timings=timings,
                preconditioner=(pre.info if pre is not None else {"preconditioner": "none"}))
    return X, info


def validation_run(K, Y, shift: float, rows, val, opts: Options, budget_bytes: float,
                   seed: int = 0, monitor=None):
    """PCG on the training rows ``rows``, scored on the held-out rows ``val``.

    Returns ``(rule, info)``: the :class:`ValidationStop` that watched the
    classification error of ``val`` after every iteration (its ``best_it`` is
    t*) and the run's info (history with ``val_error``). ``monitor`` sees each
    iterate over all n rows, the held-out ones 0.
    """
    n = K.shape[0]
    rule = ValidationStop(opts.patience, opts.val_min_iter)
    # The held-out rows of K, restricted to the training columns: one contiguous
    # copy (|val| x n), read once per iteration for the validation scores; freed
    # on return, before the refit's preconditioner needs the memory.
    K_val = np.ascontiguousarray(K[val][:, rows])
    y_val = np.argmax(Y[val], axis=1)

    def on_iterate(it, X, record):
        err = float(np.mean(np.argmax(K_val @ X.astype(K.dtype), axis=1) != y_val))
        record["val_error"] = err
        stop = rule.update(it, err)
        if monitor is None:
            return stop
        full = np.zeros((n, X.shape[1]))
        full[rows] = X
        return bool(monitor(it, full)) or stop

    _, info = _run(PanelOperator(K, shift, rows=rows), Y[rows], opts, budget_bytes, seed,
                   on_iterate)
    return rule, info


def pcg_bytes(n: int, opts: Options, budget_bytes: float) -> int:
    """Working memory of :func:`pcg_solve` besides K (the planner's count)."""
    if opts.precond != "eigen":
        return 0
    s, q = choose_sketch(n, budget_bytes, opts.precond_rank)
    val = int(opts.val_fraction * n) * n * 4 if opts.val_fraction else 0
    return sketch_bytes(n, s, q) + val

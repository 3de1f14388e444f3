"""Solve (K + lam I) alpha = Y and measure the result: one entry point per source of K.

:func:`solve_stored` takes a Gram buffer however it was built (in memory, on
disk, streamed from feature chunks); :func:`solve_matrix_free` never stores K.
Both return a :class:`Solution` with what the paper reports: the norm
sqrt(trace(alpha^T K alpha)), the residual, and K alpha on the training points.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..options import Options
from .cg import NystromPreconditioner, block_cg
from .cholesky import choose_tile, factor
from .operators import KernelOperator, StoredOperator
from .refine import refine

# Nyström preconditioner rank for the CG solvers: a few hundred columns capture
# the fast-decaying top of an image kernel's spectrum.
PRECOND_RANK = 300


@dataclass
class Solution:
    alpha: np.ndarray           # (n, c) float64
    K_alpha: np.ndarray         # K alpha (no shift): the fit on the training points
    relative_residual: float    # ||(K + shift I) alpha - Y|| / ||Y||
    norm: float                 # sqrt(trace(alpha^T K alpha))
    shift: float                # lam + jitter actually used
    iterations: int = 0
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    converged: bool = True      # False: less exact than the dtype allows, or CG short of tol
    warnings: list = field(default_factory=list)   # each inexactness, in words


def _numeric_jitter(jitter) -> float:
    return float(jitter) if isinstance(jitter, (int, float)) else 0.0


def _measure(op, alpha, Y, sol_kwargs) -> Solution:
    t = time.perf_counter()
    KA = op @ alpha
    K_alpha = KA - op.shift * alpha
    sol = Solution(alpha=alpha, K_alpha=K_alpha,
                   relative_residual=float(np.linalg.norm(KA - Y) / np.linalg.norm(Y)),
                   norm=float(np.sqrt(max(np.sum(alpha * K_alpha), 0.0))),
                   shift=op.shift, **sol_kwargs)
    sol.timings["residual"] = time.perf_counter() - t
    return sol


def solve_stored(K, Y, *, lam: float = 0.0, solver: str = "cholesky",
                 options: Options | None = None) -> Solution:
    """Solve with K held in a buffer (it is overwritten by the Cholesky factor).

    Parameters
    ----------
    K : ndarray (n, n), C-contiguous, both triangles filled
    Y : ndarray (n, c)
    solver : {"cholesky", "cg"}
    """
    opts = options or Options()
    Y = np.asarray(Y, dtype=np.float64).reshape(len(K), -1)
    timings, info = {}, {}
    t = time.perf_counter()
    if solver == "cholesky":
        tile = choose_tile(len(K), opts.tile_size)
        f = factor(K, lam=lam, jitter=opts.jitter, tile=tile, progress=opts.progress)
        timings["factor"] = time.perf_counter() - t
        info.update(f.info)
        t = time.perf_counter()
        alpha = f.solve(Y)
        timings["solve"] = time.perf_counter() - t
        op = StoredOperator(K, f.k_diag, f.shift)
        if opts.refine_steps:
            t = time.perf_counter()
            alpha, info["refine_history"] = refine(f.solve, op, Y, alpha, opts.refine_steps)
            timings["refine"] = time.perf_counter() - t
        return _measure(op, alpha, Y, dict(timings=timings, info=info))
    if solver == "cg":
        op = StoredOperator(K, K.diagonal().astype(np.float64), lam + _numeric_jitter(opts.jitter))
        return _cg(op, Y, opts, timings)
    raise InputError(f"solver must be 'cholesky' or 'cg' for a stored K, got {solver!r}")


def solve_matrix_free(kernel, X, Y, *, lam: float = 0.0,
                      options: Options | None = None) -> Solution:
    """Nyström-preconditioned block CG with K's blocks recomputed every iteration."""
    opts = options or Options()
    Y = np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
    op = KernelOperator(kernel, X, shift=lam + _numeric_jitter(opts.jitter),
                        dtype=opts.resolve_dtype(len(X)),
                        block_size=opts.block_size)
    return _cg(op, Y, opts, {})


def _cg(op, Y, opts: Options, timings: dict) -> Solution:
    t = time.perf_counter()
    pre = NystromPreconditioner(op, PRECOND_RANK, seed=0)
    alpha, info = block_cg(op, Y, tol=opts.tol, max_iter=opts.max_iter, precond=pre)
    timings["solve"] = time.perf_counter() - t
    return _measure(op, alpha, Y, dict(timings=timings, info=info, iterations=info["iterations"]))

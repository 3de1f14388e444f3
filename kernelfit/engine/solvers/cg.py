"""Block conjugate gradient, preconditioned by any callable R -> M^{-1} R.

All right-hand sides advance together, so every iteration costs one product
of the operator with an n x c block (a GEMM when K is stored, one pass of
recomputed kernel blocks when matrix-free). Each column keeps its own step
sizes and stops on its own relative residual.

The preconditioners live in :mod:`kernelfit.engine.solvers.precond` (one eigen
preconditioner for every CG solver; Jacobi).
"""

from __future__ import annotations

import numpy as np

from kernelfit.engine.solvers.scaling import column_scale, scaled_norm


def block_cg(op, Y, *, tol=1e-6, max_iter=1000, precond=None, X0=None, callback=None):
    """Solve op X = Y for every column of Y by (preconditioned) conjugate gradient.

    Parameters
    ----------
    op : operator with ``@`` (n x n, symmetric positive definite)
    Y : ndarray (n,) or (n, c)
    tol : float
        Stop a column when ||r_j|| <= tol ||y_j||.
    max_iter : int
    precond : callable R -> M^{-1} R, optional
    X0 : ndarray, optional starting point (default 0)
    callback : callable (iteration, X, rel) -> bool, optional
        Called after each iteration with the iterate and the per-column relative
        residuals; True stops the iteration there (``info["stopped_by_callback"]``,
        and ``converged`` is then False unless every column had reached ``tol``).

    Returns
    -------
    X : ndarray, float64
    info : dict
        ``iterations``, ``converged`` (every column reached ``tol``),
        ``breakdown`` (some column stopped on p^T K p <= 0), ``residuals``
        (final per-column relative residuals, absolute for a zero column of Y),
        ``history`` (max relative residual per iteration).
    """
    Y = np.asarray(Y, dtype=np.float64)
    one_d = Y.ndim == 1
    Y = Y.reshape(len(Y), -1)
    # CG is linear in each column: it solves for Y / s, s a power of two per column (exact),
    # so that targets near 1e300 do not overflow r^T z, nor a float32 operator's copy of P.
    s = column_scale(Y)
    unscaled = bool(np.all(s == 1.0))
    Y = Y / s
    X = np.zeros_like(Y) if X0 is None else np.array(X0, dtype=np.float64).reshape(Y.shape) / s
    ynorm = np.linalg.norm(Y, axis=0)
    ynorm[ynorm == 0] = 1.0
    R = Y - op @ X if X0 is not None else Y.copy()
    Z = precond(R) if precond else R
    P = Z.copy()
    rz = np.einsum("ij,ij->j", R, Z)
    history = []
    iterations = 0
    broke = np.zeros(Y.shape[1], dtype=bool)
    stopped = False
    rel = scaled_norm(R, axis=0) / ynorm
    active = rel > tol                        # a zero column of Y is solved by X = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - read after the loop
        if not active.any():
            iterations -= 1
            break
        Q = op @ P
        pq = np.einsum("ij,ij->j", P, Q)
        # p^T K p <= 0 (or NaN): K is singular or indefinite along p in working
        # precision. No step is right then: the column stops, flagged, instead of
        # taking an arbitrary one.
        bad = active & ~(pq > 0)
        broke |= bad
        active &= ~bad
        a = np.where(active, rz / np.where(pq > 0, pq, 1.0), 0.0)
        X += a * P
        R -= a * Q
        rel = scaled_norm(R, axis=0) / ynorm
        history.append(float(rel.max()))
        active &= rel > tol
        # The callback sees every iterate, the last one included; its stop only
        # counts while some column is still short of tol.
        if (callback is not None and callback(iterations, X if unscaled else X * s, rel)
                and active.any()):
            stopped = True
            break
        if not active.any():
            break
        Z = precond(R) if precond else R
        rz_new = np.einsum("ij,ij->j", R, Z)
        b = np.where(active, rz_new / np.where(rz != 0, rz, 1.0), 0.0)
        P = Z + b * P
        rz = rz_new
    info = {"iterations": iterations, "converged": bool(not active.any() and not broke.any()),
            "breakdown": bool(broke.any()), "residuals": rel.tolist(), "history": history,
            "stopped_by_callback": stopped}
    X *= s
    return (X[:, 0] if one_d else X), info

"""The minimum-norm solution alpha = K^+ Y for a K that is singular to working precision.

When K is singular (exact duplicate points with agreeing targets, a bandwidth
so wide that K is all ones to rounding, scikit-learn's test data under the
default scale) the interpolant is still defined: among all alpha with the
least residual ||K alpha - Y||, the one of least norm, K^+ Y. It is what
gradient descent from alpha = 0 converges to, since every step stays in
K's range.

It comes from a symmetric eigendecomposition K = V diag(w) V^T in float64,
dropping eigenvalues at or below ``n * eps(stored dtype) * w_max`` (NumPy's
``pinv(hermitian=True)`` default), or below the size of K's most negative
eigenvalue when that is larger (a PSD K has none: it measures the noise of
how K was computed, e.g. the distance kernels' ||x||^2 + ||y||^2 - 2<x,y>
cancels). Eigenvalues near the noise have O(1) relative error, and keeping
them makes alpha depend on rounding: with a cutoff of n eps max K_ii instead,
two LAPACK eigensolvers disagreed by 25% on alpha (80 points, sigma = 1000).
Cost: two n x n float64 arrays
(the copy LAPACK overwrites, and the eigenvectors) and ~9 n^3 flops, which is
why :func:`plan_pinv` caps n (:data:`kernelfit.engine.sizes.PINV_MAX_N`).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh

from kernelfit.engine.sizes import COPY_ROWS, PINV_MAX_N, host_limit
from kernelfit.errors import NotPositiveDefiniteError, PlanError
from kernelfit.formats import human_bytes
from kernelfit.options import Options


def pinv_bytes(n: int) -> int:
    """Memory the rank-revealing solve allocates for n points (float64 copy + eigenvectors)."""
    return 2 * n * n * 8 + 64 * n * 8


def pinv_solve(A, k_diag, Y, *, stored_dtype=None):
    """alpha = K^+ Y from a buffer whose strict upper triangle holds K.

    Parameters
    ----------
    A : ndarray (n, n)
        Its strict upper triangle holds K (the lower one may hold a partial
        Cholesky factor: it is not read).
    k_diag : ndarray (n,)
        K's diagonal.
    Y : ndarray (n, c)
    stored_dtype : dtype, optional
        Precision K was stored in (default: A's); sets the cutoff.

    Returns
    -------
    alpha : ndarray (n, c), float64
    info : dict
        ``rank``, ``cutoff`` (absolute), ``eigenvalue_max``, ``eigenvalue_min``.

    Raises
    ------
    NotPositiveDefiniteError
        K has an eigenvalue below ``-sqrt(eps) * w_max``: it is not positive
        semi-definite beyond rounding (not a kernel matrix), so K^+ Y is not an
        interpolant.
    """
    n = A.shape[0]
    eps = np.finfo(np.dtype(stored_dtype or A.dtype)).eps
    M = np.empty((n, n))
    for r0 in range(0, n, COPY_ROWS):          # the upper triangle only; no n^2 temporary
        r1 = min(r0 + COPY_ROWS, n)
        M[r0:r1, r0:] = A[r0:r1, r0:]
    M[np.diag_indices(n)] = k_diag
    # M.T is Fortran-ordered (no copy by f2py) and its lower triangle is M's upper one.
    w, V = eigh(M.T, lower=True, overwrite_a=True, check_finite=False)
    del M
    w_max = float(max(abs(w[0]), abs(w[-1]), np.finfo(np.float64).tiny))
    if w[0] < -np.sqrt(eps) * w_max:
        raise NotPositiveDefiniteError(
            pivot=None, n=n, dtype=stored_dtype or A.dtype,
            detail=f" (K of n={n:,} has the eigenvalue {w[0]:.3g} against a largest one of "
                   f"{w_max:.3g}: it is not positive semi-definite beyond rounding, so it is no "
                   "kernel matrix; check how it was built)")
    # A PSD K has no negative eigenvalue: a negative one measures the rounding noise
    # of the computed K (the distance kernels' ||x||^2 + ||y||^2 - 2<x,y> cancels,
    # leaving more than eps per entry), so eigenvalues up to its size are noise too.
    cutoff = max(n * eps * w_max, -float(w[0]))
    keep = w > cutoff
    Vk = V[:, keep]
    alpha = Vk @ ((Vk.T @ np.asarray(Y, dtype=np.float64)) / w[keep][:, None])
    info = {"rank": int(keep.sum()), "cutoff": float(cutoff), "eigenvalue_max": float(w[-1]),
            "eigenvalue_min": float(w[0])}
    return alpha, info


def plan_pinv(n: int, options: Options | None = None, *, in_use: int = 0) -> int:
    """Check that the rank-revealing solve K^+ Y of n points fits; return its bytes.

    It runs when K already sits in memory (and failed to factor), so it is
    planned against what is available now (and ``memory_limit`` less
    ``in_use``, the bytes of that K). Refused when n is above
    :data:`kernelfit.engine.sizes.PINV_MAX_N` (the eigendecomposition's ~9 n^3
    flops take too long) or its two float64 n x n arrays do not fit.
    """
    opts = options or Options()
    need = pinv_bytes(n)
    if n > PINV_MAX_N:
        raise PlanError(f"the minimum-norm solve K^+ y of n={n:,} needs an eigendecomposition "
                        f"of ~{9 * n**3 / 1e12:.0f} TFLOP and {human_bytes(need)}; it is done "
                        f"for n <= {PINV_MAX_N:,} only. Pass lam > 0 or jitter='auto', or "
                        "fewer points.")
    # in_use: what the fit holds already (K): counted against memory_limit, while
    # the available memory has paid for it.
    limit = host_limit(None)
    if opts.memory_limit is not None:
        limit = min(limit, opts.memory_limit - int(in_use))
    if need > limit:
        raise PlanError(f"the minimum-norm solve K^+ y of n={n:,} needs {human_bytes(need)} "
                        f"(two float64 n x n arrays) besides K, but only {human_bytes(limit)} "
                        "is available. Pass lam > 0 or jitter='auto', or free memory.")
    return need

"""In-place tiled Cholesky factorization and solve.

The matrix is a C-ordered n x n buffer holding the full symmetric K. The
factorization overwrites the lower triangle (diagonal included) with L, tile by
tile, and never writes the strict upper triangle, which therefore still holds
K afterwards. Together with the saved diagonal (:class:`Factor.k_diag`) that is
all of K: residuals, iterative refinement and a jitter retry need no copy.

Each LAPACK/BLAS call sees one tile, or one chunk of a tile column, so every
call touches far fewer than 2^31 elements (SciPy's LAPACK is LP64 and
crashes beyond that) and temporaries stay at a few tiles. The trailing update
is one GEMM per (row chunk, tile column), computed straight from strided
views of the buffer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import get_blas_funcs, get_lapack_funcs, solve_triangular
from tqdm.auto import tqdm

from ..errors import InputError, NotPositiveDefiniteError

# Row chunk of the panel solve and the trailing update: bounds the temporaries
# (chunk x tile elements) and keeps each GEMM large enough to run near peak.
_CHUNK_ROWS = 8192

# jitter="auto": diagonal jitter tried in turn, relative to the mean of K's diagonal.
AUTO_JITTER = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


@dataclass
class Factor:
    """A factorized K + shift I, living in the caller's buffer.

    Attributes
    ----------
    A : ndarray (n, n)
        Lower triangle: L. Strict upper triangle: K (unchanged).
    k_diag : ndarray (n,)
        The diagonal of K before any shift.
    shift : float
        What was added to the diagonal before factoring (lam + jitter).
    tile : int
    info : dict
        GFLOP count, seconds, jitter attempts.
    """

    A: np.ndarray
    k_diag: np.ndarray
    shift: float
    tile: int
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.A.shape[0]

    def solve(self, Y) -> np.ndarray:
        """Solve (K + shift I) X = Y with the stored factor; float64 result."""
        return cholesky_solve(self.A, Y, tile=min(self.tile, SOLVE_TILE))


# Tile width for K too large for one LAPACK call (n^2 >= 2**31): 6,144-wide tiles
# kept a 60,000 x 60,000 float32 factorization at ~86% of GEMM on 2 cores.
LARGE_TILE = 6144

# Tile of the triangular solves, independent of the factor's: each diagonal tile is
# upcast to float64 for solve_triangular, so it stays small (32 MB).
SOLVE_TILE = 2048


def choose_tile(n: int, tile_size: int | None = None) -> int:
    """The tile width to factor an n x n K with.

    ``None`` (auto): the whole matrix in one in-place LAPACK call whenever that
    call stays below 2**31 elements (n <= 46,340; LAPACK's own blocked potrf is
    the fastest route there), else :data:`LARGE_TILE`. A given width is clipped
    to what keeps every call below 2**31 elements.
    """
    if tile_size is None:
        tile_size = n if n * n < 2**31 else LARGE_TILE
    return int(max(1, min(tile_size, max_tile(n))))


def max_tile(n: int) -> int:
    """Largest tile width whose calls stay below 2**31 elements (LP64 LAPACK)."""
    return max(1, min(n, (2**31 - 1) // max(n, _CHUNK_ROWS)))


def _check_buffer(A):
    if not isinstance(A, np.ndarray) or A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise InputError(f"expected a square 2-D ndarray, got shape {getattr(A, 'shape', None)}")
    if A.dtype not in (np.float32, np.float64):
        raise InputError(f"expected a float32 or float64 matrix, got {A.dtype}")
    if not A.flags.c_contiguous:
        raise InputError("the matrix must be C-contiguous (the factorization works in place)")


def tiled_cholesky(A, *, tile: int = 4096, shift: float = 0.0, progress: bool = False,
                   k_diag=None) -> Factor:
    """Factor (K + shift I) = L L^T in place, tile by tile.

    Parameters
    ----------
    A : ndarray (n, n), C-contiguous float32/float64
        Holds K in at least its lower triangle (both, for residuals later).
    tile : int
        Tile width; clipped so that each call touches < 2**31 elements.
    shift : float
        Added to the diagonal (lambda + jitter); the original diagonal is
        kept in ``Factor.k_diag``.
    k_diag : ndarray, optional
        K's diagonal when ``A``'s diagonal no longer holds it (a retry).

    Raises
    ------
    NotPositiveDefiniteError
        At the first pivot <= 0, naming its index and the remedies. The strict
        upper triangle still holds K, so :func:`restore_lower` can undo the
        partial factorization.
    """
    _check_buffer(A)
    n = A.shape[0]
    tile = int(max(1, min(tile, max_tile(n))))
    diag_idx = np.diag_indices(n)
    k_diag = A[diag_idx].astype(np.float64) if k_diag is None else np.asarray(k_diag, np.float64)
    A[diag_idx] = k_diag + shift
    potrf, = get_lapack_funcs(("potrf",), (A,))
    trsm, = get_blas_funcs(("trsm",), (A,))
    lower = np.tril(np.ones((tile, tile), dtype=bool)) if tile < n else None
    buf = np.empty((min(max(_CHUNK_ROWS, tile), n), tile), dtype=A.dtype) if tile < n else None
    t_start = time.perf_counter()
    bar = tqdm(total=round(n**3 / 3e9, 1), desc="cholesky", unit="GFLOP",
               disable=not progress, delay=1.0)
    for k0 in range(0, n, tile):
        k1 = min(k0 + tile, n)
        tk = k1 - k0
        # 1. factor the diagonal tile (a contiguous Fortran copy: f2py would copy anyway)
        Dkk = A[k0:k1, k0:k1]
        if tk == n:
            # One tile: the whole matrix, in place through its Fortran view (the
            # upper triangle of A.T is A's lower one); no copy, K stays above.
            L, info = potrf(A.T, lower=0, overwrite_a=1, clean=0)
        else:
            T = np.array(Dkk, order="F")
            L, info = potrf(T, lower=1, overwrite_a=1, clean=0)
        if info > 0:
            raise NotPositiveDefiniteError(pivot=k0 + info - 1, n=n, dtype=A.dtype,
                                           detail=f" (shift {shift:g} on the diagonal)")
        if info < 0:  # pragma: no cover - argument error, a bug here
            raise RuntimeError(f"potrf argument {-info} invalid")
        if tk < n:
            np.copyto(Dkk, L, where=lower[:tk, :tk])
        # 2. panel below it: A[r, k] <- A[r, k] L_kk^{-T}, i.e. L_kk X^T = A[r, k]^T
        for r0 in range(k1, n, _CHUNK_ROWS):
            r1 = min(r0 + _CHUNK_ROWS, n)
            Bt = np.array(A[r0:r1, k0:k1].T, order="F")
            Xt = trsm(1.0, L, Bt, side=0, lower=1, trans_a=0, overwrite_b=1)
            A[r0:r1, k0:k1] = Xt.T
        # 3. trailing update of the lower triangle: A[i, j] -= A[i, k] A[j, k]^T
        for j0 in range(k1, n, tile):
            j1 = min(j0 + tile, n)
            tj = j1 - j0
            Pj = A[j0:j1, k0:k1]
            # diagonal tile: only its lower triangle (the upper one is K)
            tmp = np.matmul(Pj, Pj.T, out=buf[:tj, :tj])
            np.subtract(A[j0:j1, j0:j1], tmp, out=A[j0:j1, j0:j1], where=lower[:tj, :tj])
            for r0 in range(j1, n, _CHUNK_ROWS):
                r1 = min(r0 + _CHUNK_ROWS, n)
                tmp = np.matmul(A[r0:r1, k0:k1], Pj.T, out=buf[:r1 - r0, :tj])
                A[r0:r1, j0:j1] -= tmp
        done = n**3 - (n - k1) ** 3
        bar.update(round(done / 3e9, 1) - bar.n)
    bar.close()
    seconds = time.perf_counter() - t_start
    gflop = n**3 / 3e9
    return Factor(A=A, k_diag=k_diag, shift=float(shift), tile=tile,
                  info={"gflop": gflop, "seconds": seconds,
                        "gflops": gflop / seconds if seconds > 0 else float("nan")})


def restore_lower(A, k_diag, *, step: int = 2048) -> None:
    """Undo a (partial) factorization: copy K's strict upper triangle back below.

    Used by the jitter retry; works tile by tile, so it needs no copy of A.
    """
    n = A.shape[0]
    for i0 in range(0, n, step):
        i1 = min(i0 + step, n)
        # rows i0:i1 of the lower triangle = columns i0:i1 of the upper triangle
        for j0 in range(0, i1, step):
            j1 = min(j0 + step, i1)
            blk = A[j0:j1, i0:i1].T
            if j0 == i0:  # diagonal block: strict lower only
                il = np.tril_indices(i1 - i0, -1)
                A[i0:i1, j0:j1][il] = blk[il]
            else:
                A[i0:i1, j0:j1] = blk
    A[np.diag_indices(n)] = k_diag


def cholesky_solve(A, Y, *, tile: int = SOLVE_TILE) -> np.ndarray:
    """Solve L L^T X = Y for all right-hand sides at once, L in A's lower triangle.

    Blocked forward and backward substitution in the factor's precision (as
    LAPACK's potrs does): per tile, one GEMM against the solved part and one
    triangular solve on the diagonal tile. Triangular solves are backward
    stable, so a float32 factor's solve adds error of the factor's own order;
    ``Options(refine_steps=...)`` recovers float64 accuracy from float64
    residuals. Returns float64.
    """
    n = A.shape[0]
    Y = np.asarray(Y)
    one_d = Y.ndim == 1
    Z = np.array(Y.reshape(n, -1), dtype=A.dtype)
    bounds = [(k0, min(k0 + tile, n)) for k0 in range(0, n, tile)]
    for k0, k1 in bounds:  # forward: L Z = Y
        if k0:
            Z[k0:k1] -= A[k0:k1, :k0] @ Z[:k0]
        Z[k0:k1] = solve_triangular(A[k0:k1, k0:k1], Z[k0:k1], lower=True, check_finite=False)
    for k0, k1 in reversed(bounds):  # backward: L^T X = Z
        if k1 < n:
            Z[k0:k1] -= A[k1:, k0:k1].T @ Z[k1:]
        Z[k0:k1] = solve_triangular(A[k0:k1, k0:k1], Z[k0:k1], lower=True, trans="T",
                                    check_finite=False)
    Z = Z.astype(np.float64, copy=False)
    return Z[:, 0] if one_d else Z


def factor(A, *, lam: float = 0.0, jitter=None, tile: int = 4096,
           progress: bool = False, accept=None) -> Factor:
    """Factor K + (lam + jitter) I in place, with an optional automatic jitter retry.

    ``jitter`` is None (none), a number (added as is), or "auto": try no
    jitter, then 1e-6, 1e-5, ... 1e-2 times the mean of K's diagonal, undoing
    each failed attempt from K's intact upper triangle. What was used, and
    every failed attempt's pivot, go into ``Factor.info``.

    ``accept``: optional callable ``Factor -> bool``, called on each factor
    that succeeds (the caller solves with it and judges the result, e.g. its
    residual). Its verdict is recorded as ``info["accepted"]``; with "auto" a
    rejected factor is undone and the next jitter tried (a K singular to
    rounding, as with exact duplicate points, often factors at jitter 0 with
    pivots of rounding size and a useless solve), except at the last level,
    which is returned for the caller to report.
    """
    if jitter is None or not isinstance(jitter, str):
        f = tiled_cholesky(A, tile=tile, shift=lam + float(jitter or 0.0), progress=progress)
        f.info.update(jitter=float(jitter or 0.0), jitter_attempts=[])
        f.info["accepted"] = bool(accept(f)) if accept is not None else True
        return f
    if jitter != "auto":
        raise InputError(f"jitter must be None, a number or 'auto', got {jitter!r}")
    k_diag = A[np.diag_indices(A.shape[0])].astype(np.float64)
    scale = float(np.mean(k_diag)) or 1.0
    attempts = []
    for level, rel in enumerate(AUTO_JITTER):
        j = rel * scale
        try:
            f = tiled_cholesky(A, tile=tile, shift=lam + j, progress=progress, k_diag=k_diag)
        except NotPositiveDefiniteError as err:
            attempts.append({"jitter": j, "pivot": err.pivot})
            restore_lower(A, k_diag)
            last = err
            continue
        f.info.update(jitter=j, jitter_attempts=attempts)
        f.info["accepted"] = bool(accept(f)) if accept is not None else True
        if f.info["accepted"] or level == len(AUTO_JITTER) - 1:
            return f
        attempts.append({"jitter": j, "pivot": None, "rejected": "inaccurate solve"})
        restore_lower(A, k_diag)
    raise last

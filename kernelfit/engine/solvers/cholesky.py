"""The tiled Cholesky factorization and solve: one schedule for every backend and storage.

K is a symmetric n x n matrix held by a *store* (:mod:`kernelfit.engine.storage.tiles`):
one in-place buffer (host memory for NumPy, device memory for CuPy and
PyTorch), or lower tiles kept in (pinned) host memory and streamed through a
GPU whose memory K does not fit. The factorization is left-looking by column
panels of width ``tile``: panel J (rows J0..n of tile column J) receives the
updates of every factored panel to its left, then its diagonal tile is
factored (potrf) and the rows below it solved (trsm). Each factored panel is
read again by every later panel but written once, which is what makes the
streamed store cheap: a panel crosses the bus once per later panel, while the
GEMMs do ``tile`` flops per element moved.

In the in-place buffer the factorization overwrites the lower triangle
(diagonal included) with L and never writes the strict upper triangle, which
therefore still holds K afterwards. With the saved diagonal
(:class:`Factor.k_diag`) that is all of K: residuals, iterative refinement and
a jitter retry need no copy.

All arithmetic goes through the store's :class:`kernelfit.engine.backend.Backend`
(potrf on one tile, trsm on a panel, a GEMM update into a view), so the same
lines run on LAPACK, cuSOLVER and the array-API fallback. On NumPy each
LAPACK/BLAS call sees one tile or one row chunk of a panel, far below 2^31
elements (SciPy's LAPACK is LP64).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from kernelfit.engine.sizes import SOLVE_TILE
from kernelfit.engine.solvers.scaling import column_scale
from kernelfit.engine.storage.tiles import ResidentStore, as_store
from kernelfit.errors import InputError, NotPositiveDefiniteError

# jitter="auto": diagonal jitter tried in turn, relative to the mean of K's diagonal.
AUTO_JITTER = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)

__all__ = ["AUTO_JITTER", "Factor", "cholesky_solve", "factor", "restore_lower", "tiled_cholesky"]


@dataclass
class Factor:
    """A factorized K + shift I, living in the caller's store.

    Attributes
    ----------
    store : ResidentStore or HostTileStore
        Lower triangle: L. In a resident buffer the strict upper triangle still holds K.
    k_diag : ndarray (n,)
        The diagonal of K before any shift (host, float64).
    shift : float
        What was added to the diagonal before factoring (lam + jitter).
    tile : int
    info : dict
        GFLOP count, seconds, GFLOP/s, jitter attempts.
    l_diag : ndarray (n,)
        L's diagonal, read as each diagonal tile is factored (for
        :mod:`kernelfit.engine.solvers.condition`).
    """

    store: object
    k_diag: np.ndarray
    shift: float
    tile: int
    info: dict = field(default_factory=dict)
    l_diag: np.ndarray | None = None   # L's diagonal (NaN for panels a resumed factor kept)

    @property
    def A(self):
        """The in-place buffer (resident stores only)."""
        return self.store.A

    @property
    def n(self) -> int:
        return self.store.n

    def solve(self, Y) -> np.ndarray:
        """Solve (K + shift I) X = Y with the stored factor; float64 host result."""
        return cholesky_solve(self.store, Y)


def tiled_cholesky(A, *, tile: int = 4096, shift: float = 0.0, progress: bool = False,
                   k_diag=None) -> Factor:
    """Factor (K + shift I) = L L^T in place, panel by panel.

    Parameters
    ----------
    A : square array (NumPy, CuPy, torch; C-contiguous float32/float64) or a tile store
        Holds K in at least its lower triangle (both, for residuals later).
    tile : int
        Panel width (a store brings its own); clipped so that each NumPy call
        touches < 2**31 elements.
    shift : float
        Added to the diagonal (lambda + jitter); the original diagonal is
        kept in ``Factor.k_diag``.
    k_diag : ndarray, optional
        K's diagonal when the buffer's diagonal no longer holds it (a retry).

    Raises
    ------
    NotPositiveDefiniteError
        At the first pivot <= 0, naming its index and the remedies. A resident
        buffer's strict upper triangle still holds K, so :func:`restore_lower`
        can undo the partial factorization.
    """
    store = as_store(A, tile)
    be, n, T = store.backend, store.n, store.tile
    k_diag = store.diagonal() if k_diag is None else np.asarray(k_diag, np.float64)
    # A store on disk may hold panels factored by a killed run with this shift:
    # left-looking, those are final, so the factor goes on from the first one after.
    first = store.begin_factor(shift)
    store.set_diagonal(k_diag + shift, first=first)
    bar = tqdm(total=round(n**3 / 3e9, 1), desc="cholesky", unit="GFLOP",
               disable=not progress, delay=1.0)
    be.synchronize()
    t_start = time.perf_counter()
    l_diag = np.full(n, np.nan)
    for J in range(first, store.n_tiles):
        j0, j1 = store.bounds(J)
        tj = j1 - j0
        P = store.load_panel(J)                   # rows j0..n of tile column J
        # 1. every factored panel to the left updates this one (left-looking)
        for Lk in store.left_panels(J):            # rows j0..n of factored columns
            be.syrk_lower_sub_(P[:tj, :], Lk[:tj, :])
            if P.shape[0] > tj:
                be.gemm_sub_(P[tj:, :], Lk[tj:, :], Lk[:tj, :])
        # 2. the diagonal tile
        info = be.potrf_(P[:tj, :])
        if info > 0:
            store.abandon()
            raise NotPositiveDefiniteError(pivot=j0 + info - 1, n=n, dtype=store.dtype,
                                           detail=f" (shift {shift:g} on the diagonal)")
        l_diag[j0:j1] = be.get_diagonal(P[:tj, :])     # tj numbers: the condition estimate's
        # 3. the panel below it: P[r] <- P[r] L_JJ^{-T}
        if P.shape[0] > tj:
            be.trsm_(P[:tj, :], P[tj:, :])
        store.store_panel(J, P)
        done = n**3 - (n - j1) ** 3
        bar.update(round(done / 3e9, 1) - bar.n)
    store.finish()
    be.synchronize()
    bar.close()
    seconds = time.perf_counter() - t_start
    # left-looking, column j costs 2 (n - j) j flops: from column a on, n^3/3 - n a^2 + 2a^3/3
    a0 = min(first * T, n)
    gflop = (n**3 / 3 - n * a0**2 + 2 * a0**3 / 3) / 1e9
    return Factor(store=store, k_diag=k_diag, shift=float(shift), tile=T, l_diag=l_diag,
                  info={"gflop": gflop, "seconds": seconds, "resumed_at_panel": first,
                        "gflops": gflop / seconds if seconds > 0 else float("nan"),
                        "storage": store.kind, "backend": be.describe()})


def restore_lower(A, k_diag, *, step: int = 2048) -> None:
    """Undo a (partial) factorization: copy K's strict upper triangle back below.

    Used by the jitter retry; works block by block, so it needs no copy of A.
    """
    store = A if not _is_array(A) else ResidentStore(A, step)
    store.restore(k_diag)


def _is_array(A) -> bool:
    return hasattr(A, "shape") and hasattr(A, "dtype")


def cholesky_solve(A, Y, *, tile: int = SOLVE_TILE) -> np.ndarray:
    """Solve L L^T X = Y for all right-hand sides at once, L in the store's lower triangle.

    Blocked forward and backward substitution in the factor's precision (as
    LAPACK's potrs does), two passes over the panels: per panel one
    triangular solve on its diagonal tile and one GEMM with the rows below.
    Triangular solves are backward stable, so a float32 factor's solve adds
    error of the factor's own order; ``Options(refine_steps=...)`` recovers
    float64 accuracy from float64 residuals. Y and the result are host arrays;
    the result is float64.
    """
    store = as_store(A, tile) if _is_array(A) else A
    be, n = store.backend, store.n
    Yh = np.asarray(Y, dtype=np.float64)
    one_d = Yh.ndim == 1
    Yh = Yh.reshape(n, -1)
    # Each column solved for Y / s, s a power of two (exact; :mod:`.scaling`): targets
    # near 1e300 stay finite through the substitutions, and through a float32 factor.
    s = column_scale(Yh)
    Z = be.asarray(np.array(Yh / s, dtype=store.dtype))   # a copy: solved in place
    for J, P in store.solve_panels():               # forward: L Z = Y
        j0, j1 = store.solve_bounds(J)
        tj = j1 - j0
        Z[j0:j1, :] = be.solve_lower(P[:tj, :], Z[j0:j1, :])
        if j1 < n:
            Z[j1:, :] -= be.matmul(P[tj:, :], Z[j0:j1, :])
    for J, P in store.solve_panels(reverse=True):   # backward: L^T X = Z
        j0, j1 = store.solve_bounds(J)
        tj = j1 - j0
        if j1 < n:
            Z[j0:j1, :] -= be.matmul(be.xp.matrix_transpose(P[tj:, :]), Z[j1:, :])
        Z[j0:j1, :] = be.solve_lower(P[:tj, :], Z[j0:j1, :], trans=True)
    out = be.to_host(Z).astype(np.float64) * s
    return out[:, 0] if one_d else out


def factor(A, *, lam: float = 0.0, jitter=None, tile: int = 4096,
           progress: bool = False, accept=None) -> Factor:
    """Factor K + (lam + jitter) I in place, with an optional automatic jitter retry.

    ``jitter`` is None (none), a number (added as is), or "auto": try no
    jitter, then 1e-6, 1e-5, ... 1e-2 times the mean of K's diagonal, undoing
    each failed attempt (from K's intact upper triangle, or by rebuilding a
    streamed store's tiles). What was used, and every failed attempt's pivot,
    go into ``Factor.info``.

    ``accept``: optional callable ``Factor -> bool``, called on each factor
    that succeeds (the caller solves with it and judges the result, e.g. its
    residual). Its verdict is recorded as ``info["accepted"]``; with "auto" a
    rejected factor is undone and the next jitter tried (a K singular to
    rounding, as with exact duplicate points, often factors at jitter 0 with
    pivots of rounding size and a useless solve), except at the last level,
    which is returned for the caller to report.
    """
    store = as_store(A, tile)
    if jitter is None or not isinstance(jitter, str):
        f = tiled_cholesky(store, shift=lam + float(jitter or 0.0), progress=progress)
        f.info.update(jitter=float(jitter or 0.0), jitter_attempts=[])
        f.info["accepted"] = bool(accept(f)) if accept is not None else True
        return f
    if jitter != "auto":
        raise InputError(f"jitter must be None, a number or 'auto', got {jitter!r}")
    k_diag = store.diagonal()
    scale = float(np.mean(k_diag)) or 1.0
    attempts = []
    for level, rel in enumerate(AUTO_JITTER):
        j = rel * scale
        try:
            f = tiled_cholesky(store, shift=lam + j, progress=progress, k_diag=k_diag)
        except NotPositiveDefiniteError as err:
            attempts.append({"jitter": j, "pivot": err.pivot})
            store.restore(k_diag)
            last = err
            continue
        f.info.update(jitter=j, jitter_attempts=attempts)
        f.info["accepted"] = bool(accept(f)) if accept is not None else True
        if f.info["accepted"] or level == len(AUTO_JITTER) - 1:
            return f
        attempts.append({"jitter": j, "pivot": None, "rejected": "inaccurate solve"})
        store.restore(k_diag)
    raise last

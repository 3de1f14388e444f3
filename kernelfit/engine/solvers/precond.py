"""Preconditioners for block (P)CG: Jacobi and EigenPro-style top eigenvectors.

One eigen preconditioner serves every CG solver (``solver="cg"``,
``"cg-matrix-free"``, ``"pcg"`` and the Dask ``"cg"``); each reads the
sketch from its own source of K through ``rows(idx) = K[idx, :]``.

:class:`TopEigenPreconditioner` flattens the top of K's spectrum, which is
what makes plain CG on an interpolation kernel slow: K's eigenvalues fall
over many orders of magnitude, and CG's first iterations only chase the
largest ones. It approximates the top q eigenpairs of K from s sampled
columns of K (a Nyström sketch, as in EigenPro and in Frangella, Tropp &
Udell 2023) and applies

    M^{-1} = U diag(1 / (lam_i + mu)) U^T + (I - U U^T) / mu,

so the preconditioned operator has its top q eigenvalues near 1 and the rest
below lam_{q+1} / mu ~ 1. K is symmetric, so the columns K[:, S] are the rows
K[S, :]^T: s contiguous rows of a stored K, or s recomputed kernel blocks
when K is never stored.

:func:`choose_sketch` fixes s and q from the memory the sketch may take and
from the decay of the sketched spectrum (see its docstring).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh

from kernelfit.engine.sizes import MAX_RANK, MAX_SKETCH
from kernelfit.errors import InputError, NonFiniteError


def sketch_bytes(n: int, s: int, q: int) -> int:
    """Peak bytes of building a sketch of s columns with q eigenvectors (see module doc)."""
    # C (float32, s x n) lives beside B (float64, n x q), then B beside U.
    return max(4 * n * s + 8 * n * q, 16 * n * q) + 8 * s * s * 2


def choose_sketch(n: int, budget_bytes: float, rank: int | None = None) -> tuple[int, int]:
    """Sketch columns s and the largest eigenvector count q allowed, from memory.

    s is the smallest of ``MAX_SKETCH``, n / 4 and what ``budget_bytes``
    allows, and q = min(s / 2, ``MAX_RANK``) (a Nyström sketch of s columns
    estimates about its top s / 2 eigenpairs well). n / 4 keeps the build
    (~n s q flops) within a few passes over K at small n, where iterations are
    cheap anyway. A given ``rank`` fixes q (and s = 2 q, at most n). The
    spectrum's decay may lower q further once the sketch is seen
    (:class:`TopEigenPreconditioner` keeps only eigenvalues above its floor).
    """
    if rank is not None:
        q = int(min(rank, n))
        s = int(min(n, 2 * q))
        return s, q
    s = max(1, min(n // 4, MAX_SKETCH))
    while s > 2 and sketch_bytes(n, s, min(s // 2, MAX_RANK)) > budget_bytes:
        s = s * 3 // 4
    return s, max(1, min(s // 2, MAX_RANK))


class JacobiPreconditioner:
    """M^{-1} R = R / diag(K + shift I): the baseline (the identity for a Gaussian K)."""

    kind = "jacobi"

    def __init__(self, diag):
        diag = np.asarray(diag, dtype=np.float64)
        if not np.all(diag > 0):
            raise InputError("the Jacobi preconditioner needs a positive diagonal of K + lam I; "
                             "use precond='eigen' or 'none', or pass lam > 0")
        self.inv = 1.0 / diag
        self.rank = 0
        self.info = {"preconditioner": "jacobi"}

    def __call__(self, R):
        return R * self.inv[:, None] if R.ndim == 2 else R * self.inv


class TopEigenPreconditioner:
    """M^{-1} from the top q eigenpairs of a Nyström sketch of K (module doc).

    Parameters
    ----------
    rows : callable idx -> K[idx, :] (s x n, any float dtype; K symmetric, no shift)
    n : int
    shift : float
        lam (+ jitter) on K's diagonal.
    sketch, rank : int
        Columns sampled (s) and eigenpairs kept at most (q <= s).
    seed : int
    eps : float
        Unit roundoff of K's dtype (``np.finfo(dtype).eps``): eigenvalues below
        ~sqrt(n) eps lam_1 are the rounding of K's entries, not K's spectrum.

    Attributes
    ----------
    U, lam : (n, q) orthonormal columns and their q eigenvalue estimates
        (descending); q = ``rank`` is 0 when the sampled rows of K are zero,
        and M^{-1} is then R / mu.
    mu : float > 0
    index : the sampled points (sorted)
    info : what a Solution records (kind, sketch, rank, mu, ...)
    """

    kind = "eigen"

    def __init__(self, rows, n: int, shift: float, *, sketch: int, rank: int, seed=0,
                 eps: float = np.finfo(np.float32).eps):
        if not 1 <= rank <= sketch <= n:
            raise InputError(f"the eigen preconditioner needs 1 <= rank <= sketch <= n, got "
                             f"rank={rank}, sketch={sketch}, n={n}; pass --precond-rank / "
                             "Options.precond_rank between 1 and n, or None to choose it")
        if not (np.isfinite(shift) and shift >= 0):
            raise InputError(f"the eigen preconditioner needs a finite shift >= 0 (lam + "
                             f"jitter on K's diagonal), got {shift!r}; pass lam >= 0")
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(n, size=sketch, replace=False))
        self.index = idx
        C = rows(idx)                                     # K[S, :], s x n
        _check_finite_sketch(C, idx)
        W = np.asarray(C[:, idx], dtype=np.float64)       # K[S, S]
        W = (W + W.T) / 2
        lw, V = eigh(W, check_finite=False)               # ascending
        lw, V = lw[::-1], V[:, ::-1]
        # Directions kept: at most `rank`, and only eigenvalues above sqrt(n) eps lam_1
        # (a margin over what rounding K's entries to its dtype moves its spectrum,
        # ~eps lam_1 / sqrt(n): flattening smaller ones would amplify rounding noise).
        # This is where the spectrum's decay lowers q (a wide bandwidth, a low-rank K).
        # No floor above that: a fixed 1e-7 lam_1 one (kept out of float64 sketches
        # only, float32's rounding floor being higher) measured worse on digits,
        # n = 1,000, float64, lam = 0: 511 vs 255 iterations at 0.01x the default
        # gamma, and at 1e-4x the residual grew to 1e3 where this rule leaves 6e-4.
        noise = np.sqrt(n) * eps
        floor = noise * max(lw[0], 0.0)
        q = int(min(rank, np.count_nonzero(lw > floor)))
        if q == 0:
            sig2, self.U = np.zeros(0), np.zeros((n, 0))
        else:
            sig2, self.U = _eigenpairs(C, V[:, :q], lw[:q])
        del C
        self.lam = sig2
        self.mu = _mu(shift, sig2, noise)
        self.rank = len(sig2)
        # The sketch's numerical rank, at what a float64 eigensolver resolves of the stored
        # K[S, S]. Below s it proves K singular to working precision (interlacing: lambda_min(K)
        # <= lambda_min(K[S, S])), and equals K's rank when S spans K's range (a low-rank K).
        self.sketch_rank = int(np.count_nonzero(
            np.abs(lw) > len(lw) * np.finfo(np.float64).eps * np.max(np.abs(lw))))
        self.info = {"preconditioner": "eigen", "sketch": int(sketch), "rank": self.rank,
                     "sketch_rank": self.sketch_rank, "rank_limit": int(rank), "mu": self.mu,
                     "top_eigenvalue": float(sig2[0]) if q else 0.0,
                     "rank_eigenvalue": float(sig2[-1]) if q else 0.0}

    def __call__(self, R):
        one_d = R.ndim == 1
        R2 = R.reshape(len(R), -1)
        UtR = self.U.T @ R2
        scale = (self.mu / (self.lam + self.mu))[:, None]
        out = (R2 + self.U @ ((scale - 1.0) * UtR)) / self.mu
        return out[:, 0] if one_d else out


def _eigenpairs(C, Vq, lwq):
    """U (n x q, orthonormal) and eigenvalues of the Nyström K_hat = C^T W_q^+ C, descending.

    B B^T = C^T V_q diag(1/lw_q) V_q^T C <= K. The n x s by s x q product runs in
    K's dtype (one GEMM); the q x q Gram and the eigenvectors in float64.
    """
    T = (Vq / np.sqrt(lwq)).astype(C.dtype)
    B = np.asarray(C.T @ T, dtype=np.float64)         # n x q
    G = B.T @ B
    sig2, Z = eigh((G + G.T) / 2)                     # B = U diag(sqrt(sig2)) Z^T
    sig2, Z = sig2[::-1], Z[:, ::-1]
    # Squared singular values below q eps of the largest are the Gram's rounding.
    keep = sig2 > max(sig2[0], 0.0) * len(sig2) * np.finfo(np.float64).eps
    sig2, Z = sig2[keep], Z[:, keep]
    return sig2, B @ (Z / np.sqrt(sig2))


def _mu(shift: float, lam, noise: float) -> float:
    """mu: what M puts on the directions U leaves out; always > 0.

    What is left of K past the kept directions is at most their smallest
    eigenvalue (Frangella et al.'s choice) plus the shift, floored at K's
    rounding level noise * lam_1 (= sqrt(n) eps lam_1). With lam = 0 and a K of
    numerical rank below q (a very wide bandwidth) the smallest kept eigenvalue
    stays above that floor, so mu > 0 and R / mu never divides by zero. With no
    direction kept (the sampled rows of K are zero) M = mu I: CG is invariant to
    a positive multiple of M^{-1}, so mu is the shift, or 1 without one (a
    tiny mu would only overflow R / mu).
    """
    if len(lam) == 0:
        return float(shift) if shift > 0 else 1.0
    return float(shift + max(lam[-1], noise * lam[0]))


def _check_finite_sketch(C, idx) -> None:
    """NonFiniteError naming the first non-finite entry of the sampled rows K[idx, :]."""
    bad = ~np.isfinite(C)
    if not bad.any():
        return
    r, j = np.argwhere(bad)[0]
    raise NonFiniteError(
        f"K has non-finite entries (first K[{int(idx[r])}, {int(j)}] = {C[r, j]}): the kernel "
        "overflowed in its dtype, or the given K or X was not finite. Rescale X (e.g. "
        "sklearn.preprocessing.StandardScaler) or use dtype='float64'.")

"""Preconditioners for block PCG on a stored K: Jacobi and EigenPro-style top eigenvectors.

:class:`TopEigenPreconditioner` flattens the top of K's spectrum, which is
what makes plain CG on an interpolation kernel slow: K's eigenvalues fall
over many orders of magnitude, and CG's first iterations only chase the
largest ones. It approximates the top q eigenpairs of K from s sampled
columns of the *stored* K (a Nyström sketch, as in EigenPro and in Frangella,
Tropp & Udell 2023) and applies

    M^{-1} = U diag(1 / (lam_i + mu)) U^T + (I - U U^T) / mu,

so the preconditioned operator has its top q eigenvalues near 1 and the rest
below lam_{q+1} / mu ~ 1. The sketch is read from K's rows (K is symmetric
and stored whole, so K[:, S] = K[S, :]^T is s contiguous rows), never
recomputed from the data.

:func:`choose_sketch` fixes s and q from the memory the sketch may take and
from the decay of the sketched spectrum (see its docstring).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh

from ..errors import InputError

# Largest sketch: s columns cost n s (float32) + 2 n q (float64) bytes and
# s^3 (eigh of K[S, S]) + 2 n s q + 4 n q^2 flops to turn into eigenvectors,
# q <= s / 2 (a sketch estimates about its top half of eigenpairs well). At
# n = 60,000, s = 2,400 that is ~1.5 GB and a few seconds, next to a 14.4 GB K
# whose single pass takes ~2 s. (s = 4,000 with randomized subspace iteration
# measured no better on MNIST at n = 60,000 and cost twice the time.)
MAX_SKETCH = 2400

# Most eigenvectors sought in the sketch. On MNIST (Gaussian, sigma 5) the
# rounding floor of a float32 K (see TopEigenPreconditioner) keeps ~740 of them
# at n = 10,000 and fewer at larger n (the floor grows as n^2, the eigenvalues
# as n); seeking more only costs subspace-iteration time.
MAX_RANK = 1200

# Eigenvalues of the sketch below this fraction of the largest are kept out of
# U: the Nyström estimate of an eigenvalue that small is dominated by the
# sketch's own error, and flattening it would amplify noise directions.
DECAY_FLOOR = 1e-7


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
    """M^{-1} from the top q eigenpairs of a Nyström sketch of the stored K (module doc).

    Parameters
    ----------
    rows : callable idx -> K[idx, :] (s x n, any float dtype; K symmetric)
    n : int
    shift : float
        lam (+ jitter) on K's diagonal.
    sketch, rank : int
        Columns sampled (s) and eigenpairs kept at most (q <= s).
    seed : int
    """

    kind = "eigen"

    def __init__(self, rows, n: int, shift: float, *, sketch: int, rank: int, seed=0,
                 eps: float = np.finfo(np.float32).eps):
        if not 1 <= rank <= sketch <= n:
            raise InputError(f"the eigen preconditioner needs 1 <= rank <= sketch <= n, got "
                             f"rank={rank}, sketch={sketch}, n={n}")
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(n, size=sketch, replace=False))
        C = rows(idx)                                     # K[S, :], s x n
        W = np.asarray(C[:, idx], dtype=np.float64)       # K[S, S]
        W = (W + W.T) / 2
        lw, V = eigh(W, check_finite=False)               # ascending
        lw, V = lw[::-1], V[:, ::-1]
        # Directions kept: at most `rank`, and only eigenvalues above sqrt(n) eps lam_1
        # (a margin over what rounding K's entries to its dtype moves its spectrum,
        # ~eps lam_1 / sqrt(n): flattening smaller ones would amplify rounding noise)
        # and above DECAY_FLOOR of the largest. This is where the spectrum's decay
        # lowers q (a wide bandwidth, a low-rank K).
        floor = max(DECAY_FLOOR, np.sqrt(n) * eps) * max(lw[0], 0.0)
        q = int(min(rank, np.count_nonzero(lw > floor)))
        if q < 1:
            raise InputError("the sampled columns of K are all zero: K has no spectrum to "
                             "precondition; use precond='jacobi' or 'none'")
        # B B^T = C^T V_q diag(1/lw_q) V_q^T C <= K. The n x s by s x q product runs in
        # K's dtype (one GEMM); the q x q Gram and the eigenvectors in float64.
        T = (V[:, :q] / np.sqrt(lw[:q])).astype(C.dtype)
        B = np.asarray(C.T @ T, dtype=np.float64)         # n x q
        del C, T
        G = B.T @ B
        sig2, Z = eigh((G + G.T) / 2)                     # B = U diag(sqrt(sig2)) Z^T
        sig2, Z = sig2[::-1], Z[:, ::-1]
        keep = sig2 > max(sig2[0], 0.0) * q * np.finfo(np.float64).eps
        sig2, Z = sig2[keep], Z[:, keep]
        self.U = B @ (Z / np.sqrt(sig2))
        del B
        self.lam = sig2
        # mu: what is left of K past the kept directions: the smallest kept eigenvalue
        # (Frangella et al.'s choice) plus the shift, never below the floor above.
        self.mu = float(shift + max(sig2[-1], np.sqrt(n) * eps * sig2[0]))
        self.rank = len(sig2)
        self.info = {"preconditioner": "eigen", "sketch": int(sketch), "rank": self.rank,
                     "rank_limit": int(rank), "mu": self.mu, "top_eigenvalue": float(sig2[0]),
                     "rank_eigenvalue": float(sig2[-1])}

    def __call__(self, R):
        one_d = R.ndim == 1
        R2 = R.reshape(len(R), -1)
        UtR = self.U.T @ R2
        scale = (self.mu / (self.lam + self.mu))[:, None]
        out = (R2 + self.U @ ((scale - 1.0) * UtR)) / self.mu
        return out[:, 0] if one_d else out

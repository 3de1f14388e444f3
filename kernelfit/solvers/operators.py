"""Linear operators v -> (K + shift I) v, for residuals, refinement and CG.

Two sources of K: the factorized buffer (whose strict upper triangle still
holds K, plus the saved diagonal) and the data itself (matrix-free: kernel
blocks recomputed on the fly, in float64 when asked, so refinement can aim at
the exact K rather than its float32 rounding).
"""

from __future__ import annotations

import numpy as np

from ..gram import cross_gram_matvec
from ..kernels import Kernel, row_sq_norms

# Rows per chunk of the stored-K product: bounds the float64 upcast temporary
# at chunk x n x 8 bytes. Small chunks stay in cache between the two products
# that read them (measured at n = 10,000: 256 rows 0.29 s, 512 0.36 s, 2,048 0.89 s).
_CHUNK = 256


class StoredOperator:
    """(K + shift I) V from a buffer whose strict upper triangle holds K.

    Reads each stored element once per product: a row chunk of the upper
    triangle serves both its own rows (U V) and, transposed, the rows below
    it (U^T V).
    """

    def __init__(self, A, k_diag, shift: float = 0.0):
        self.A = A
        self.k_diag = np.asarray(k_diag, dtype=np.float64)
        self.shift = float(shift)
        self.shape = A.shape
        self.dtype = A.dtype

    def __matmul__(self, V):
        V = np.asarray(V, dtype=np.float64)
        one_d = V.ndim == 1
        V = V.reshape(len(V), -1)
        n = self.A.shape[0]
        Y = (self.k_diag + self.shift)[:, None] * V
        for r0 in range(0, n, _CHUNK):
            r1 = min(r0 + _CHUNK, n)
            U = self.A[r0:r1, r0:].astype(np.float64)
            m = r1 - r0
            U[:, :m] = np.triu(U[:, :m], 1)
            Y[r0:r1] += U @ V[r0:]
            Y[r0:] += U.T @ V[r0:r1]   # the strict lower triangle, read as U^T
        return Y[:, 0] if one_d else Y

    def diagonal(self):
        return self.k_diag + self.shift

    def columns(self, idx) -> np.ndarray:
        """K[:, idx] (without the shift), read from the upper triangle and diagonal."""
        n = self.A.shape[0]
        out = np.empty((n, len(idx)))
        for c, j in enumerate(idx):
            out[:j, c] = self.A[:j, j]
            out[j, c] = self.k_diag[j]
            out[j + 1:, c] = self.A[j, j + 1:]
        return out


class KernelOperator:
    """(K + shift I) V with K's blocks recomputed from the data (matrix-free)."""

    def __init__(self, kernel: Kernel, X, shift: float = 0.0, dtype="float64",
                 block_size: int = 1024):
        self.kernel = kernel
        self.X = np.ascontiguousarray(X, dtype=dtype)
        self.sq = row_sq_norms(self.X)
        self.shift = float(shift)
        self.dtype = dtype
        self.block_size = block_size
        self.shape = (len(X), len(X))

    def diagonal(self):
        return self.kernel.diag(self.X, self.sq) + self.shift

    def columns(self, idx) -> np.ndarray:
        """K[:, idx] (without the shift), recomputed from the data."""
        idx = np.asarray(idx)
        return self.kernel.block(self.X, self.X[idx], self.sq, self.sq[idx]).astype(np.float64)

    def __matmul__(self, V):
        V = np.asarray(V, dtype=np.float64)
        one_d = V.ndim == 1
        V2 = V.reshape(len(V), -1)
        Y = cross_gram_matvec(self.kernel, self.X, self.X, V2, dtype=self.dtype,
                              block_size=self.block_size, sq_cols=self.sq)
        Y += self.shift * V2
        return Y[:, 0] if one_d else Y

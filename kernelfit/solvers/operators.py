"""Linear operators v -> (K + shift I) v, for residuals, refinement and CG.

Two sources of K: the factorized buffer (whose strict upper triangle still
holds K, plus the saved diagonal) and the data itself (matrix-free: kernel
blocks recomputed on the fly, in float64 when asked, so refinement can aim at
the exact K rather than its float32 rounding). Both run on the backend that
holds their arrays; vectors come and go as host float64 arrays.
"""

from __future__ import annotations

import numpy as np

from ..backend import backend_of, get_backend
from ..gram import cross_gram_matvec
from ..kernels import Kernel, row_sq_norms
from ..sizes import STORED_PRODUCT_ROWS


class StoredOperator:
    """(K + shift I) V from a buffer whose strict upper triangle holds K (any backend).

    Reads each stored element once per product: a row chunk of the upper
    triangle, upcast to float64, serves both its own rows (U V) and,
    transposed, the rows below it (U^T V). V and the result are host arrays.
    """

    def __init__(self, A, k_diag, shift: float = 0.0):
        self.A = A
        self.backend = backend_of(A)
        self.k_diag = np.asarray(k_diag, dtype=np.float64)
        self.shift = float(shift)
        self.shape = tuple(A.shape)
        self.dtype = self.backend.dtype_name(A)
        self.chunk = STORED_PRODUCT_ROWS["host" if self.backend.name == "numpy" else "device"]

    def __matmul__(self, V):
        be, xp = self.backend, self.backend.xp
        V = np.asarray(V, dtype=np.float64)
        one_d = V.ndim == 1
        V = V.reshape(len(V), -1)
        n = self.shape[0]
        Vd = be.asarray(V, "float64")
        Y = be.asarray((self.k_diag + self.shift)[:, None] * V, "float64")
        for r0 in range(0, n, self.chunk):
            r1 = min(r0 + self.chunk, n)
            U = be.astype(self.A[r0:r1, r0:], "float64", copy=True)   # zeroed below: a copy
            m = r1 - r0
            U[:, :m] = xp.where(be.tril_mask(m), xp.zeros_like(U[:, :m]), U[:, :m])
            Y[r0:r1, :] += be.matmul(U, Vd[r0:, :])
            Y[r0:, :] += be.matmul(xp.matrix_transpose(U), Vd[r0:r1, :])  # strict lower, as U^T
        Y = be.to_host(Y)
        return Y[:, 0] if one_d else Y

    def diagonal(self):
        return self.k_diag + self.shift

    def row_block(self, idx) -> np.ndarray:
        """K[idx, :] (without the shift, in K's dtype), read from the upper triangle and diagonal.

        Row i of K is column i of its upper triangle up to the diagonal, then row i
        of it: the lower triangle may hold a factor.
        """
        n = self.shape[0]
        out = np.empty((len(idx), n), dtype=self.dtype)
        for r, i in enumerate(idx):
            out[r, :i] = self.A[:i, i]
            out[r, i] = self.k_diag[i]
            out[r, i + 1:] = self.A[i, i + 1:]
        return out


class KernelOperator:
    """(K + shift I) V with K's blocks recomputed from the data (matrix-free), on a backend."""

    def __init__(self, kernel: Kernel, X, shift: float = 0.0, dtype="float64",
                 block_size: int = 1024, backend=None):
        self.kernel = kernel
        self.backend = backend or get_backend("numpy")
        self.X = np.ascontiguousarray(X, dtype=dtype)
        self.sq = row_sq_norms(self.X)
        self._Xd = self.backend.asarray(self.X, np.dtype(dtype).name)
        self._sqd = self.backend.asarray(self.sq, "float64")
        self.shift = float(shift)
        self.dtype = dtype
        self.block_size = block_size
        self.shape = (len(X), len(X))
        self._diag = self.kernel.diag(self.X, self.sq)     # exact, as the Gram builders'

    def diagonal(self):
        return self._diag + self.shift

    def row_block(self, idx) -> np.ndarray:
        """K[idx, :] (without the shift, in the operator's dtype), recomputed from the data."""
        idx = np.asarray(idx)
        return self.kernel.block(self.X[idx], self.X, self.sq[idx], self.sq)

    def __matmul__(self, V):
        V = np.asarray(V, dtype=np.float64)
        one_d = V.ndim == 1
        V2 = V.reshape(len(V), -1)
        Y = cross_gram_matvec(self.kernel, self.X, self._Xd, V2, dtype=self.dtype,
                              block_size=self.block_size, sq_cols=self._sqd,
                              backend=self.backend, diag=self._diag)
        Y += self.shift * V2
        return Y[:, 0] if one_d else Y

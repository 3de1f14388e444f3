"""The host backend: NumPy ufuncs with ``out=``, SciPy's LAPACK potrf and BLAS trsm."""

from __future__ import annotations

import functools

import numpy as np

from kernelfit.engine.backend.base import Backend


class NumpyBackend(Backend):
    """Host memory: NumPy ufuncs with ``out=``, SciPy's LAPACK potrf and BLAS trsm."""

    name = "numpy"

    def __init__(self):
        import array_api_compat.numpy as xp
        super().__init__(xp, None)
        self.np = np

    def asarray(self, a, dtype=None):
        return np.ascontiguousarray(a, dtype=np.dtype(dtype) if dtype else None)

    def empty(self, shape, dtype):
        return self.np.empty(shape, dtype=np.dtype(dtype))

    def zeros(self, shape, dtype):
        return self.np.zeros(shape, dtype=np.dtype(dtype))

    def astype(self, a, dtype, copy: bool = False):
        return a.astype(np.dtype(dtype), copy=copy)

    def dtype(self, name):
        return np.dtype(name)

    def dtype_name(self, a) -> str:
        return np.dtype(a.dtype).name

    def clamp0_(self, a):
        self.np.maximum(a, 0, out=a)
        return a

    def sqrt_(self, a):
        self.np.sqrt(a, out=a)
        return a

    def exp_(self, a):
        self.np.exp(a, out=a)
        return a

    def pow_(self, a, p: int):
        # A high degree can overflow to inf: the solve's finiteness check reports it
        # with its cause (NonFiniteError), which a bare RuntimeWarning would not.
        with np.errstate(over="ignore"):
            self.np.power(a, p, out=a)
        return a

    def mul_(self, a, s: float):
        with np.errstate(over="ignore"):        # -gamma d2 may overflow: exp gives 0
            a *= s
        return a

    @functools.lru_cache(maxsize=8)  # noqa: B019
    def _tril_masks(self, m: int):
        return self.np.tril(self.np.ones((m, m), dtype=bool))

    def matmul(self, a, b):
        return self.np.matmul(a, b)

    def inner_into(self, out, X, Y):
        return self.np.matmul(X, Y.T, out=out)

    def row_sq_norms(self, X, step: int = 2048):
        # float64 accumulation in row blocks bounds the temporary for float32 X
        out = self.np.empty(X.shape[0])
        for i in range(0, X.shape[0], step):
            blk = X[i:i + step].astype(self.np.float64, copy=False)
            out[i:i + step] = self.np.einsum("ij,ij->i", blk, blk)
        return out

    def gemm_sub_(self, C, A, B) -> None:
        # np.matmul has no beta: the product goes through a row-chunked temporary.
        step = self.chunk_rows
        buf = self.np.empty((min(step, C.shape[0]), C.shape[1]), dtype=C.dtype)
        Bt = B.T
        for r0 in range(0, C.shape[0], step):
            r1 = min(r0 + step, C.shape[0])
            tmp = self.np.matmul(A[r0:r1], Bt, out=buf[:r1 - r0])
            C[r0:r1] -= tmp

    def syrk_lower_sub_(self, C, A) -> None:
        tmp = self.np.matmul(A, A.T)
        self.np.subtract(C, tmp, out=C, where=self.tril_mask(C.shape[0]))

    def potrf_(self, T) -> int:
        from scipy.linalg import get_lapack_funcs
        potrf, = get_lapack_funcs(("potrf",), (T,))
        if T.flags.c_contiguous:
            # The whole matrix: in place through its Fortran view (the upper triangle
            # of T.T is T's lower one), no copy, K stays in the strict upper part.
            _, info = potrf(T.T, lower=0, overwrite_a=1, clean=0)
        else:
            L, info = potrf(np.array(T, order="F"), lower=1, overwrite_a=1, clean=0)
            if info == 0:
                np.copyto(T, L, where=self.tril_mask(T.shape[0]))
        if info < 0:  # pragma: no cover - an argument error is a bug here
            raise RuntimeError(f"potrf argument {-info} invalid")
        return int(info)

    def trsm_(self, L, B) -> None:
        from scipy.linalg import get_blas_funcs
        trsm, = get_blas_funcs(("trsm",), (B,))
        Lf = np.array(L, order="F")
        step = self.chunk_rows
        for r0 in range(0, B.shape[0], step):
            r1 = min(r0 + step, B.shape[0])
            # L X^T = B^T, with B^T a Fortran array: what f2py passes without a copy
            Bt = np.array(B[r0:r1].T, order="F")
            B[r0:r1] = trsm(1.0, Lf, Bt, side=0, lower=1, trans_a=0, overwrite_b=1).T

    def solve_lower(self, L, B, trans: bool = False):
        from scipy.linalg import solve_triangular
        return solve_triangular(L, B, lower=True, trans="T" if trans else "N",
                                check_finite=False)

    def get_diagonal(self, A):
        return np.array(A[np.diag_indices(A.shape[0])], dtype=np.float64)

    def set_diagonal(self, A, values) -> None:
        A[np.diag_indices(A.shape[0])] = values

    def all_finite(self, a) -> bool:
        return bool(np.isfinite(a).all())

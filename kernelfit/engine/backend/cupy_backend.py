"""The CuPy backend (one CUDA device) and the import of CuPy, done only when it is asked for."""

from __future__ import annotations

import numpy as np

from kernelfit.engine.backend.base import Backend
from kernelfit.engine.backend.numpy_backend import NumpyBackend
from kernelfit.errors import BackendError, InputError


class CupyBackend(NumpyBackend):
    """One CUDA device through CuPy: the ufunc style of NumPy, cuSOLVER and cuBLAS below."""

    name = "cupy"

    def __init__(self, device=None):
        cp = import_cupy()
        import array_api_compat.cupy as xp
        Backend.__init__(self, xp, None)
        self.np = cp
        index = _cuda_index(device)
        if index >= cp.cuda.runtime.getDeviceCount():
            raise BackendError(f"device='cuda:{index}' was asked for, but CuPy sees "
                               f"{cp.cuda.runtime.getDeviceCount()} CUDA device(s)")
        self.device = cp.cuda.Device(index)
        self.device.use()

    @property
    def on_gpu(self) -> bool:
        return True

    @property
    def device_name(self) -> str:
        return f"cuda:{self.device.id}"

    def describe(self) -> str:
        cp = self.np
        props = cp.cuda.runtime.getDeviceProperties(self.device.id)
        return f"cupy on cuda:{self.device.id} ({props['name'].decode()})"

    def asarray(self, a, dtype=None):
        return self.np.asarray(np.ascontiguousarray(a, dtype=np.dtype(dtype) if dtype else None))

    def to_host(self, a) -> np.ndarray:
        return self.np.asnumpy(a)

    def inner_into(self, out, X, Y):
        # CuPy's matmul takes no strided out=: the block goes through a temporary
        G = X @ Y.T
        if out is None:
            return G
        out[...] = G
        return out

    def syrk_lower_sub_(self, C, A) -> None:
        # CuPy's ufuncs have no where=
        C[...] = self.np.where(self.tril_mask(C.shape[0]), C - A @ A.T, C)

    def gemm_sub_(self, C, A, B) -> None:
        step = self.chunk_rows
        for r0 in range(0, C.shape[0], step):
            C[r0:r0 + step] -= A[r0:r0 + step] @ B.T

    def synchronize(self) -> None:
        self.np.cuda.get_current_stream().synchronize()

    def free_memory(self) -> int:
        self.np.get_default_memory_pool().free_all_blocks()
        pool = self.np.get_default_memory_pool()
        free, _ = self.np.cuda.runtime.memGetInfo()
        return int(free + pool.free_bytes())

    def potrf_(self, T) -> int:
        cp = self.np
        L = cp.linalg.cholesky(T)           # cuSOLVER potrf on a copy of the tile
        d = cp.diagonal(L)
        bad = ~(cp.isfinite(d) & (d > 0))
        if bool(bad.any()):
            return int(cp.argmax(bad)) + 1
        cp.copyto(T, L, where=self.tril_mask(T.shape[0]))
        return 0

    def trsm_(self, L, B) -> None:
        from cupyx.scipy.linalg import solve_triangular
        Lc = self.np.ascontiguousarray(L)
        step = self.chunk_rows
        for r0 in range(0, B.shape[0], step):
            r1 = min(r0 + step, B.shape[0])
            B[r0:r1] = solve_triangular(Lc, B[r0:r1].T, lower=True).T

    def solve_lower(self, L, B, trans: bool = False):
        from cupyx.scipy.linalg import solve_triangular
        return solve_triangular(self.np.ascontiguousarray(L), B, lower=True,
                                trans="T" if trans else "N")

    def get_diagonal(self, A):
        return self.np.asnumpy(self.np.diagonal(A)).astype(np.float64)

    def set_diagonal(self, A, values) -> None:
        self.np.fill_diagonal(A, 0)
        A[self.np.diag_indices(A.shape[0])] = self.np.asarray(values, dtype=A.dtype)

    def all_finite(self, a) -> bool:
        return bool(self.np.isfinite(a).all())


def _cuda_index(device) -> int:
    if device is None or device == "cuda":
        return 0
    text = str(device)
    if not text.startswith("cuda:") or not text[5:].isdigit():
        raise InputError(f"backend='cupy' runs on a CUDA device: device must be None, 'cuda' "
                         f"or 'cuda:N', got {device!r}")
    return int(text[5:])


def import_cupy():
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise BackendError("backend='cupy' needs a CUDA device; CuPy sees none")
    except ImportError as err:
        raise BackendError("backend='cupy' needs CuPy and a CUDA device: `pip install "
                           "\"kernelfit[gpu]\"`, or use backend='numpy' / 'torch'") from err
    except Exception as err:  # cupy raises its own CUDARuntimeError without a driver
        if isinstance(err, BackendError):
            raise
        raise BackendError(f"backend='cupy' cannot reach a CUDA device: {err}") from err
    return cupy

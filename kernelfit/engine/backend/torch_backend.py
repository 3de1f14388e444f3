"""The PyTorch backend (CPU or CUDA) and the import of PyTorch, done only when it is asked for."""

from __future__ import annotations

import numpy as np

from kernelfit.engine.backend.base import Backend
from kernelfit.errors import BackendError


class TorchBackend(Backend):
    """One PyTorch device (CPU or CUDA): in-place tensor methods, cuSOLVER/cuBLAS on a GPU."""

    name = "torch"

    def __init__(self, device=None):
        torch = import_torch()
        import array_api_compat.torch as xp
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise BackendError(f"device={device!r} was asked for, but PyTorch sees no "
                                   "CUDA device")
            dev = torch.device("cuda", dev.index if dev.index is not None
                               else torch.cuda.current_device())
        super().__init__(xp, dev)
        self.torch = torch
        # The factor and the Gram must stay float32-accurate: no TF32 in any product.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    def describe(self) -> str:
        if self.on_gpu:
            return f"torch on {self.device} ({self.torch.cuda.get_device_name(self.device)})"
        return "torch on cpu"

    def dtype(self, name):
        return getattr(self.torch, np.dtype(name).name)

    def asarray(self, a, dtype=None):
        a = np.ascontiguousarray(a, dtype=np.dtype(dtype) if dtype else None)
        if not self.on_gpu or not a.flags.writeable:
            # on the CPU a tensor from_numpy shares the array's memory, and the engine
            # writes into what it is given: always a copy
            a = a.copy()
        return self.torch.from_numpy(a).to(self.device)

    def to_host(self, a) -> np.ndarray:
        return a.detach().cpu().numpy()

    def astype(self, a, dtype, copy: bool = False):
        return a.to(self.dtype(dtype), copy=copy)

    def synchronize(self) -> None:
        if self.on_gpu:
            self.torch.cuda.synchronize(self.device)

    def free_memory(self) -> int:
        if not self.on_gpu:
            return super().free_memory()
        self.torch.cuda.empty_cache()
        free, _ = self.torch.cuda.mem_get_info(self.device)
        # What the caching allocator holds but does not use is free to this run too.
        held = (self.torch.cuda.memory_reserved(self.device)
                - self.torch.cuda.memory_allocated(self.device))
        return int(free + held)

    def clamp0_(self, a):
        return a.clamp_(min=0)

    def sqrt_(self, a):
        return a.sqrt_()

    def exp_(self, a):
        return a.exp_()

    def pow_(self, a, p: int):
        return a.pow_(p)

    def mul_(self, a, s: float):
        return a.mul_(s)

    def inner_into(self, out, X, Y):
        if out is None:
            return X @ Y.mT
        return self.torch.mm(X, Y.mT, out=out)

    def row_sq_norms(self, X, step: int = 8192):
        out = self.torch.empty(X.shape[0], dtype=self.torch.float64, device=X.device)
        for i in range(0, X.shape[0], step):
            blk = X[i:i + step].double()
            out[i:i + step] = (blk * blk).sum(1)
        return out

    def gemm_sub_(self, C, A, B) -> None:
        # cuBLAS writes a row-major view with a leading dimension directly (no copy).
        C.addmm_(A, B.mT, alpha=-1.0)

    def syrk_lower_sub_(self, C, A) -> None:
        upd = A @ A.mT
        C.sub_(upd.tril_())

    def potrf_(self, T) -> int:
        L, info = self.torch.linalg.cholesky_ex(T)
        info = int(info)
        if info == 0:
            T.copy_(L.add_(T.triu(1)))     # L below, K's strict upper triangle kept
        return info

    def trsm_(self, L, B) -> None:
        # X L^T = B, row chunks: the result is a temporary of the chunk's size
        Ut = L.tril().mT
        step = self.chunk_rows
        for r0 in range(0, B.shape[0], step):
            blk = B[r0:r0 + step]
            blk.copy_(self.torch.linalg.solve_triangular(Ut, blk, upper=True, left=False))

    def solve_lower(self, L, B, trans: bool = False):
        Lt = L.tril()
        return self.torch.linalg.solve_triangular(Lt.mT if trans else Lt, B, upper=trans)

    def get_diagonal(self, A):
        # a copy: on the CPU .numpy() would alias A's diagonal, which the factor overwrites
        return A.diagonal().to(self.torch.float64, copy=True).cpu().numpy()

    def set_diagonal(self, A, values) -> None:
        A.diagonal().copy_(self.torch.from_numpy(np.array(values, dtype=np.float64)))

    def all_finite(self, a) -> bool:
        return bool(self.torch.isfinite(a).all())


def import_torch():
    try:
        import torch
    except ImportError as err:
        raise BackendError("backend='torch' needs PyTorch: `pip install \"kernelfit[torch]\"` "
                           "(a CPU build: `pip install torch==2.13.0` from PyTorch's CPU "
                           "index), or use backend='numpy'") from err
    return torch

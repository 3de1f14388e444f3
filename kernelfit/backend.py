"""Where a run's arrays live, and the few primitives the array API lacks.

The engine (kernel maps, Gram builders, the tiled Cholesky, the solves,
prediction) is written once against a :class:`Backend`: its ``xp`` is the
array-API namespace of the arrays (through ``array-api-compat``: NumPy, CuPy,
PyTorch on CPU or CUDA; ``array-api-strict`` in the tests), and its methods
supply what the standard has no word for but what makes n = 60,000 fit:
in-place element-wise maps, an in-place Cholesky of one tile, the panel's
triangular solve, a GEMM update into a view, host <-> device copies,
synchronization and free memory.

The generic :class:`Backend` implements every primitive with standard calls
only (allocating temporaries where the standard has no in-place form), so the
engine runs under ``array-api-strict``; :class:`NumpyBackend`,
:class:`CupyBackend` and :class:`TorchBackend` override them with the
libraries' in-place, LAPACK/cuSOLVER-backed versions. Libraries are imported
only when their backend is asked for.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from .errors import BackendError, InputError
from .options import BACKENDS as BACKEND_CHOICES

#: What ``--backend`` accepts besides "auto" (a GPU when one is present).
BACKENDS = tuple(b for b in BACKEND_CHOICES if b != "auto")

# A CUDA driver exposes this device node; without it "auto" needs no GPU library import.
_NVIDIA_NODE = "/dev/nvidiactl"


class Backend:
    """Array-API primitives for one namespace and device (generic, allocating fallbacks).

    Subclasses replace these with in-place library calls; the results are the
    same up to rounding, which the tests check against NumPy.
    """

    name = "array-api"

    def __init__(self, xp, device=None):
        self.xp = xp
        self.device = device

    # -- identity --------------------------------------------------------
    @property
    def on_gpu(self) -> bool:
        return False

    @property
    def chunk_rows(self) -> int:
        """Rows per chunk of a panel's GEMM update or triangular solve (bounds temporaries)."""
        from .plan import CHUNK_ROWS, DEVICE_CHUNK_ROWS
        return DEVICE_CHUNK_ROWS if self.on_gpu else CHUNK_ROWS

    def describe(self) -> str:
        return f"{self.name} on {self.device_name}"

    @property
    def device_name(self) -> str:
        return "cpu" if self.device is None else str(self.device)

    def __repr__(self) -> str:
        return f"<Backend {self.describe()}>"

    # -- arrays and copies -------------------------------------------------
    def dtype(self, name):
        """The namespace's dtype object for "float32" / "float64"."""
        return getattr(self.xp, np.dtype(name).name)

    def dtype_name(self, a) -> str:
        return str(a.dtype).removeprefix("torch.").rsplit(".", 1)[-1]

    def asarray(self, a, dtype=None):
        """A host array (or anything array-like) on this backend's device."""
        a = np.asarray(a)
        dt = self.dtype(dtype or a.dtype)
        return self.xp.asarray(np.ascontiguousarray(a, dtype=np.dtype(dtype or a.dtype)),
                               dtype=dt, device=self.device)

    def to_host(self, a) -> np.ndarray:
        return np.asarray(a)

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=self.dtype(dtype), device=self.device)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=self.dtype(dtype), device=self.device)

    def astype(self, a, dtype, copy: bool = False):
        """``a`` in ``dtype``; a new array when ``copy`` (else possibly ``a`` itself)."""
        return self.xp.astype(a, self.dtype(dtype), copy=copy)

    def synchronize(self) -> None:
        """Wait for queued device work (timings must not stop at a kernel launch)."""

    def free_memory(self) -> int:
        """Bytes a run may still allocate where this backend keeps its arrays."""
        from .plan import available_memory
        return int(available_memory())

    # -- element-wise, in place ---------------------------------------------
    def mul_(self, a, s: float):
        a *= s
        return a

    def add_(self, a, b):
        a += b
        return a

    def clamp0_(self, a):
        a[...] = self.xp.maximum(a, self.xp.zeros_like(a))
        return a

    def sqrt_(self, a):
        a[...] = self.xp.sqrt(a)
        return a

    def exp_(self, a):
        a[...] = self.xp.exp(a)
        return a

    def pow_(self, a, p: int):
        a[...] = a ** p
        return a

    def tril_mask(self, m: int):
        """Boolean (m, m) mask of the lower triangle, diagonal included (cached per size)."""
        return self._tril_masks(m)

    @functools.lru_cache(maxsize=8)  # noqa: B019 - a handful of tile sizes per run
    def _tril_masks(self, m: int):
        i = self.xp.arange(m, device=self.device)
        return i[:, None] >= i[None, :]

    # -- dense linear algebra on views ---------------------------------------
    def matmul(self, a, b):
        return self.xp.matmul(a, b)

    def inner_into(self, out, X, Y):
        """X @ Y^T, into ``out`` (a view whose last axis is unit-stride) when given."""
        G = self.xp.matmul(X, self.xp.matrix_transpose(Y))
        if out is None:
            return G
        out[...] = G
        return out

    def row_sq_norms(self, X, step: int = 8192):
        """Squared row norms in float64, on the backend (no float64 copy of all of X)."""
        xp = self.xp
        parts = []
        for i in range(0, X.shape[0], step):
            blk = xp.astype(X[i:min(i + step, X.shape[0]), ...], xp.float64)
            parts.append(xp.sum(blk * blk, axis=1))
        return xp.concat(parts) if parts else xp.zeros(0, dtype=xp.float64, device=self.device)

    def gemm_sub_(self, C, A, B) -> None:
        """C -= A @ B^T, C a (strided) view written in place."""
        C -= self.xp.matmul(A, self.xp.matrix_transpose(B))

    def syrk_lower_sub_(self, C, A) -> None:
        """Lower triangle (diagonal included) of C -= A @ A^T; C's strict upper part untouched."""
        upd = self.xp.matmul(A, self.xp.matrix_transpose(A))
        C[...] = self.xp.where(self.tril_mask(C.shape[0]), C - upd, C)

    def potrf_(self, T) -> int:
        """T = L L^T in place: L in the lower triangle, the strict upper part untouched.

        Returns 0, or the 1-based index of the first pivot <= 0 (LAPACK's info).
        """
        xp = self.xp
        try:
            L = xp.linalg.cholesky(T)
        except Exception:  # noqa: BLE001 - each library raises its own LinAlgError
            return _first_bad_pivot(self.to_host(T))
        d = xp.linalg.diagonal(L)
        ok = xp.isfinite(d) & (d > 0)
        if not bool(xp.all(ok)):
            return int(xp.argmax(xp.astype(~ok, xp.int8))) + 1
        T[...] = xp.where(self.tril_mask(T.shape[0]), L, T)
        return 0

    def trsm_(self, L, B) -> None:
        """B <- B L^{-T} in place (the panel below a factored diagonal tile), L lower."""
        xp = self.xp
        # X L^T = B  <=>  L X^T = B^T; the standard has only a general solve.
        B[...] = xp.matrix_transpose(xp.linalg.solve(self._lower(L), xp.matrix_transpose(B)))

    def solve_lower(self, L, B, trans: bool = False):
        """L X = B (or L^T X = B), L the lower triangle of a square view; a new array."""
        xp = self.xp
        Lt = self._lower(L)
        return xp.linalg.solve(xp.matrix_transpose(Lt) if trans else Lt, B)

    def _lower(self, L):
        return self.xp.where(self.tril_mask(L.shape[0]), L, self.xp.zeros_like(L))

    def get_diagonal(self, A):
        """A's diagonal as a new float64 host array."""
        return self.to_host(self.xp.linalg.diagonal(A)).astype(np.float64)

    def set_diagonal(self, A, values) -> None:
        n = A.shape[0]
        v = self.asarray(np.asarray(values, dtype=np.float64), self.dtype_name(A))
        eye = self.xp.eye(n, dtype=A.dtype, device=self.device)
        A[...] = A * (1 - eye) + eye * v[None, :]

    def all_finite(self, a) -> bool:
        return bool(self.xp.all(self.xp.isfinite(a)))


def _first_bad_pivot(T: np.ndarray) -> int:
    """LAPACK's info (1-based index of the first pivot <= 0) for a host copy of a tile."""
    from scipy.linalg import get_lapack_funcs
    potrf, = get_lapack_funcs(("potrf",), (T,))
    _, info = potrf(np.array(T, order="F"), lower=1)
    return int(info) or 1


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


def _cuda_index(device) -> int:
    if device is None or device == "cuda":
        return 0
    text = str(device)
    if not text.startswith("cuda:") or not text[5:].isdigit():
        raise InputError(f"backend='cupy' runs on a CUDA device: device must be None, 'cuda' "
                         f"or 'cuda:N', got {device!r}")
    return int(text[5:])


def import_torch():
    try:
        import torch
    except ImportError as err:
        raise BackendError("backend='torch' needs PyTorch: `pip install \"kernelfit[torch]\"` "
                           "(a CPU build: `pip install torch==2.13.0` from PyTorch's CPU "
                           "index), or use backend='numpy'") from err
    return torch


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


@functools.lru_cache(maxsize=8)
def get_backend(name: str = "numpy", device: str | None = None) -> Backend:
    """The backend a run asked for ("auto": torch on a GPU if one is present, else NumPy)."""
    if name == "auto":
        name, device = _auto(device)
    if name == "numpy":
        if device not in (None, "cpu"):
            raise InputError(f"backend='numpy' runs in host memory: device must be None or "
                             f"'cpu', got {device!r}")
        return NumpyBackend()
    if name == "torch":
        return TorchBackend(device)
    if name == "cupy":
        return CupyBackend(device)
    raise InputError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")


def resolve_backend(options, solver: str = "cholesky") -> Backend:
    """The backend of a fit: ``options.backend`` and ``options.device`` resolved.

    "auto" takes a GPU for the exact solve only: the CG solvers and the
    matrix-free path run on the host (NumPy) whatever "auto" finds.
    """
    name = options.backend
    if name == "auto" and solver != "cholesky":
        name = "numpy"
    return get_backend(name, options.device)


def _auto(device):
    """A GPU when one is usable (PyTorch first, then CuPy), else NumPy on the host."""
    if device == "cpu" or not os.path.exists(_NVIDIA_NODE):
        return "numpy", None
    try:
        import torch
        if torch.cuda.is_available():
            return "torch", device
    except ImportError:
        pass
    try:
        import_cupy()
        return "cupy", device
    except BackendError:
        pass
    return "numpy", None


def backend_of(a) -> Backend:
    """The backend that owns array ``a`` (its library and device)."""
    if isinstance(a, np.ndarray):
        return get_backend("numpy")
    mod = type(a).__module__.split(".")[0]
    if mod == "torch":
        return get_backend("torch", str(a.device))
    if mod == "cupy":
        return get_backend("cupy", f"cuda:{a.device.id}")
    import array_api_compat
    xp = array_api_compat.array_namespace(a)
    return _generic(xp, array_api_compat.device(a))


@functools.lru_cache(maxsize=4)
def _generic(xp, device) -> Backend:
    return Backend(xp, device)

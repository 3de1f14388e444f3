"""The generic :class:`Backend`: array-API primitives for one namespace and device.

The engine (kernel maps, Gram builders, the tiled Cholesky, the solves,
prediction) is written once against a :class:`Backend`: its ``xp`` is the
array-API namespace of the arrays (through ``array-api-compat``: NumPy, CuPy,
PyTorch on CPU or CUDA; ``array-api-strict`` in the tests), and its methods
supply what the standard has no word for but what makes n = 60,000 fit:
in-place element-wise maps, an in-place Cholesky of one tile, the panel's
triangular solve, a GEMM update into a view, host <-> device copies,
synchronization and free memory.

This generic class implements every primitive with standard calls only
(allocating temporaries where the standard has no in-place form), so the
engine runs under ``array-api-strict``; the library backends
(:mod:`.numpy_backend`, :mod:`.cupy_backend`, :mod:`.torch_backend`) override
them with in-place, LAPACK/cuSOLVER-backed versions.
"""

from __future__ import annotations

import functools

import numpy as np


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
        from kernelfit.engine.sizes import CHUNK_ROWS, DEVICE_CHUNK_ROWS
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
        from kernelfit.engine.sizes import available_memory
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

    def matmul_gflops(self, dtype: str = "float64", size: int = 2048, reps: int = 2) -> float:
        """This device's matmul rate, GFLOP/s: a warm-up, then the best of ``reps`` size^3 products.

        The one measurement of "the machine's GEMM peak" that benchmarks, the
        planner's time estimates and the progress spinner divide by. Smaller
        products read low while BLAS threads wake up (on 2 CPU cores, 512^3
        read 8x low and 1024^3 41 against 65 GFLOP/s): 2,048^3 on a CPU, larger
        on a GPU.
        """
        import time

        rng = np.random.default_rng(0)
        A = self.asarray(rng.standard_normal((size, size)), dtype)
        B = self.asarray(rng.standard_normal((size, size)), dtype)
        self.matmul(A, B)            # warm-up: threads, pages, kernels picked
        self.synchronize()
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            self.matmul(A, B)
            self.synchronize()
            best = min(best, time.perf_counter() - t)
        return 2 * size**3 / max(best, 1e-12) / 1e9

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

"""The exact solve on PyTorch: Gram build, Cholesky and triangular solves on one device.

On a GPU this is cuSOLVER's potrf and cuBLAS: full MNIST (60,000 x 60,000,
14.4 GB in float32) builds and factors in seconds on one H100. On the CPU
build of PyTorch the same code runs (slowly, but exactly), which is how CI
exercises it on machines with no GPU.

The factor lives beside K (torch has no in-place Cholesky), so the device must
hold 2 n^2 elements; K is kept for the float64 residual, the norm and the
jitter retries. Results come back as NumPy float64, judged by the same
quality gate as the NumPy path (:func:`kernelfit.solvers.solve.check_solution`);
a K singular to working precision (lam 0, no jitter) gets the same
minimum-norm K^+ y, computed from a host copy (n <= PINV_MAX_N).
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import BackendError, InputError, NotPositiveDefiniteError, PlanError
from ..kernels import Kernel
from ..options import Options
from .cholesky import AUTO_JITTER
from .solve import Solution, _pinv_allowed, _solve_pinv, check_solution, residual_limit

# Rows per float64 upcast of K in residual products: bounds the temporary.
_UPCAST_ROWS = 4096


def import_torch():
    try:
        import torch
    except ImportError as err:
        raise BackendError("backend='torch' needs PyTorch: `pip install torch` (for the CPU "
                           "build: `pip install torch==2.13.0`), or use backend='numpy'") from err
    return torch


def resolve_device(device: str | None = None):
    """The torch device to use: the one asked for, else CUDA when present, else the CPU."""
    torch = import_torch()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError("device='cuda' was asked for, but PyTorch sees no CUDA device")
    return device


def _sync(device) -> None:
    if device.type == "cuda":
        import_torch().cuda.synchronize(device)


def _check_memory(device, n: int, d: int, itemsize: int, memory_limit: int | None = None,
                  n_outputs: int = 1) -> int:
    """Refuse a solve that does not fit on ``device``; returns the bytes it needs.

    The budget is the device's free memory, capped by ``Options.memory_limit``
    when one is given (as the NumPy planner is).
    """
    from ..plan import available_memory, human_bytes
    if device.type == "cuda":
        free, _ = import_torch().cuda.mem_get_info(device)
        where = f"free on {device}"
    else:
        free = available_memory()
        where = "free in host memory"
    limit, said = int(free), where
    if memory_limit is not None and memory_limit < limit:
        limit, said = int(memory_limit), "allowed by memory_limit"
    # K and its factor, X in the working dtype, float64 right-hand sides and solutions,
    # and one float64 upcast block of the residual product.
    need = (2 * n * n + 2 * n * d) * itemsize + 8 * n * (4 * n_outputs + 2) \
        + 8 * min(n, _UPCAST_ROWS) * n
    if need > limit:
        raise PlanError(f"the torch solve of n={n:,} needs about {human_bytes(need)} on "
                        f"{device} (K and its factor), but {human_bytes(limit)} is {said}. "
                        "Use dtype='float32', fewer points, or backend='numpy' (in-place tiled "
                        "Cholesky in host memory)")
    return need


def kernel_blocks(kernel: Kernel, A, B, sqA, sqB, block: int, out):
    """k(A, B) into ``out`` (m, k), one GEMM plus an in-place kernel map per row block."""
    torch = import_torch()
    for i in range(0, A.shape[0], block):
        G = out[i:i + block]
        torch.matmul(A[i:i + block], B.T, out=G)
        kernel.from_inner(G, sqA[i:i + block], sqB)
    return out


def solve_torch(kernel: Kernel, X, Y, *, lam: float = 0.0, options: Options | None = None,
                device: str | None = None) -> Solution:
    """Solve (K + lam I) alpha = Y on a torch device (``options.device``, else CUDA if any)."""
    torch = import_torch()
    opts = options or Options()
    dev = resolve_device(device or opts.device)
    n, d = X.shape
    dtype = {"float32": torch.float32, "float64": torch.float64}[opts.resolve_dtype(n)]
    Y = np.asarray(Y, dtype=np.float64).reshape(n, -1)
    _check_memory(dev, n, d, torch.finfo(dtype).bits // 8, opts.memory_limit, Y.shape[1])
    timings, info = {}, {"device": str(dev)}

    t = time.perf_counter()
    Xd = torch.as_tensor(np.ascontiguousarray(X), device=dev).to(dtype)
    sq = (Xd.double() ** 2).sum(1)          # exact norms; cast to dtype inside from_inner
    K = torch.empty((n, n), dtype=dtype, device=dev)
    # Each row block is computed whole (both triangles): on a GPU the GEMM is
    # cheap next to the transfer and the factorization, and K comes out symmetric.
    kernel_blocks(kernel, Xd, Xd, sq, sq, opts.block_size, K)
    k_diag = torch.as_tensor(kernel.diag(X, sq.cpu().numpy()), device=dev)
    K.diagonal().copy_(k_diag)
    _sync(dev)
    timings["gram"] = time.perf_counter() - t

    Yd = torch.as_tensor(Y, device=dev)
    limit = residual_limit(opts.resolve_dtype(n), n)
    measured = {}

    def accept(L, shift) -> bool:
        # Solve with this factor and measure it (the residual the Solution reports):
        # jitter="auto" moves on when the solve is inaccurate, not only when potrf fails.
        timings["factor"] = time.perf_counter() - t_factor
        t = time.perf_counter()
        alpha = _cholesky_solve(L, Yd.to(dtype)).double()
        _sync(dev)
        timings["solve"] = time.perf_counter() - t
        t = time.perf_counter()
        K_alpha = _matmul64(K, alpha)           # K's diagonal holds k(x, x) + shift here
        resid = K_alpha - Yd
        K_alpha -= shift * alpha
        ynorm, rnorm = float(Yd.norm()), float(resid.norm())
        measured["sol"] = sol = Solution(
            alpha=alpha.cpu().numpy(), K_alpha=K_alpha.cpu().numpy(),
            relative_residual=rnorm / ynorm if ynorm > 0 else rnorm,
            norm=float(torch.sqrt(torch.clamp((alpha * K_alpha).sum(), min=0))),
            shift=shift, timings=timings, info=info)
        timings["residual"] = time.perf_counter() - t
        return bool(np.isfinite(sol.relative_residual) and sol.relative_residual <= limit)

    t_factor = time.perf_counter()
    try:
        shift, info["jitter"], info["jitter_attempts"] = _factor(K, k_diag, lam, opts.jitter,
                                                                 accept)
    except NotPositiveDefiniteError as err:
        if not _pinv_allowed(n, lam, opts):
            raise
        # The same minimum-norm answer as the NumPy path, from a host copy of K (n is
        # capped by PINV_MAX_N, so the copy is at most half a GB).
        K.diagonal().copy_(k_diag)
        K_host = K.cpu().numpy()
        del K
        sol = _solve_pinv(K_host, k_diag.cpu().numpy(), Y, opts, timings,
                          reason=f"Cholesky met pivot {err.pivot} <= 0 on {dev}")
        sol.info.update(device=str(dev), solved_on="cpu (eigendecomposition)")
        return check_solution(sol, limit=residual_limit(K_host.dtype, n), options=opts,
                              dtype=K_host.dtype)
    info["gflops"] = n**3 / 3 / 1e9 / max(timings["factor"], 1e-12)
    sol = measured["sol"]
    return check_solution(sol, limit=residual_limit(opts.resolve_dtype(n), n), options=opts,
                          dtype=opts.resolve_dtype(n),
                          explain_nonfinite=lambda: f"the kernel of X overflowed on {dev} "
                                                    f"in {opts.resolve_dtype(n)}")


def predict_torch(kernel: Kernel, X_new, X_fit, alpha, *, dtype: str = "float32",
                  device: str | None = None) -> np.ndarray:
    """sum_i alpha_i k(x, x_i) for the rows of ``X_new``, on a torch device; float64 result."""
    torch = import_torch()
    dev = resolve_device(device)
    tdtype = {"float32": torch.float32, "float64": torch.float64}[str(dtype)]
    Xf = torch.as_tensor(np.ascontiguousarray(X_fit), device=dev).to(tdtype)
    Xn = torch.as_tensor(np.ascontiguousarray(X_new), device=dev).to(tdtype)
    A = torch.as_tensor(np.asarray(alpha, dtype=np.float64), device=dev).reshape(len(Xf), -1)
    sqf, sqn = (Xf.double() ** 2).sum(1), (Xn.double() ** 2).sum(1)
    n = len(Xf)
    step = max(1, 2**26 // max(n, 1))          # k(x, X_fit) blocks of <= 64 Mi elements
    buf = torch.empty((min(step, len(Xn)), n), dtype=tdtype, device=dev)
    out = torch.empty((len(Xn), A.shape[1]), dtype=torch.float64, device=dev)
    for i in range(0, len(Xn), step):
        blk = buf[:len(Xn[i:i + step])]
        kernel_blocks(kernel, Xn[i:i + step], Xf, sqn[i:i + step], sqf, step, blk)
        out[i:i + step] = _matmul64(blk, A)
    return out.cpu().numpy().reshape((len(Xn),) + np.shape(alpha)[1:])


def _cholesky_solve(L, Y, tile: int = 4096):
    """L L^T X = Y by blocked substitution: GEMMs on panels, triangular solves on tiles.

    ``torch.cholesky_solve`` takes a column-major copy of L (another n^2
    elements); on tiles the copies stay tile-sized.
    """
    torch = import_torch()
    n = L.shape[0]
    Z = Y.clone()
    bounds = [(k0, min(k0 + tile, n)) for k0 in range(0, n, tile)]
    for k0, k1 in bounds:
        if k0:
            Z[k0:k1] -= L[k0:k1, :k0] @ Z[:k0]
        Z[k0:k1] = torch.linalg.solve_triangular(L[k0:k1, k0:k1], Z[k0:k1], upper=False)
    for k0, k1 in reversed(bounds):
        if k1 < n:
            Z[k0:k1] -= L[k1:, k0:k1].mT @ Z[k1:]
        Z[k0:k1] = torch.linalg.solve_triangular(L[k0:k1, k0:k1].mT, Z[k0:k1], upper=True)
    return Z


def _matmul64(K, V):
    out = V.new_zeros((K.shape[0], V.shape[1]))
    for i in range(0, K.shape[0], _UPCAST_ROWS):
        out[i:i + _UPCAST_ROWS] = K[i:i + _UPCAST_ROWS].double() @ V
    return out


def _factor(K, k_diag, lam: float, jitter, accept):
    """Cholesky of K + (lam + jitter) I, judged by ``accept(L, shift)`` (which solves with it).

    K's diagonal is left shifted by what was accepted. With jitter="auto" a
    failed or rejected level moves on to the next; the last level's factor is
    kept even if rejected (the caller's check reports it).
    """
    torch = import_torch()
    if jitter is None or not isinstance(jitter, str):
        levels, scale = [float(jitter or 0.0)], 1.0
    elif jitter == "auto":
        levels, scale = list(AUTO_JITTER), float(k_diag.mean()) or 1.0
    else:
        raise InputError(f"jitter must be None, a number or 'auto', got {jitter!r}")
    attempts = []
    for level, rel in enumerate(levels):
        j = rel * scale
        K.diagonal().copy_(k_diag + (lam + j))
        L, fail = torch.linalg.cholesky_ex(K)
        fail = int(fail)
        if fail == 0:
            ok = accept(L, lam + j)
            del L
            if ok or level == len(levels) - 1:
                return lam + j, j, attempts
            attempts.append({"jitter": j, "pivot": None, "rejected": "inaccurate solve"})
            continue
        del L
        attempts.append({"jitter": j, "pivot": fail - 1})
    raise NotPositiveDefiniteError(attempts[-1]["pivot"], K.shape[0],
                                   str(K.dtype).removeprefix("torch."),
                                   detail=f" on {K.device}")

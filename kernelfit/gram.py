"""Blocked Gram builders: in memory (host or device) and into tile stores.

K is written into one preallocated n x n buffer, one row panel at a time:
panel i holds rows [i0, i1) and columns [i0, n), computed as one GEMM into the
buffer itself, then mirrored into the column panel below the diagonal. Each
symmetric block is therefore computed once, and there is never an ``X @ X.T``
over the whole matrix (NumPy's SYRK path segfaults once n^2 > 2^31).

Both triangles are filled on purpose: the tiled Cholesky overwrites the lower
triangle with L and leaves the strict upper triangle holding K, so residuals,
refinement and jitter retries need no second copy of K.
"""

from __future__ import annotations

import numpy as np
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .backend import backend_of, get_backend
from .errors import InputError
from .kernels import Kernel
from .options import Options
from .sizes import MIRROR_STEP, gram_rows, working_dtype


def _panel_bounds(n: int, block: int) -> list[tuple[int, int]]:
    return [(i, min(i + block, n)) for i in range(0, n, block)]


def _build_panel(X, sq, kernel: Kernel, out, i0: int, i1: int) -> None:
    n = X.shape[0]
    panel = out[i0:i1, i0:n]
    kernel.block(X[i0:i1, :], X[i0:n, :], sq[i0:i1], sq[i0:n], out=panel)
    mirror_panel(out, i0, i1)


def mirror_panel(out, i0: int, i1: int) -> None:
    """Copy row panel [i0, i1) (upper part, columns >= i0) into the lower triangle.

    Square sub-blocks keep the transposed (strided) reads within cache; the
    diagonal block is mirrored too, so K is exactly symmetric. Index arrays
    over a whole block would cost more memory than the panel's GEMM.
    """
    be = backend_of(out)
    xp = be.xp
    n = out.shape[0]
    step = MIRROR_STEP if be.name == "numpy" else n
    for j0 in range(i1, n, step):
        j1 = min(j0 + step, n)
        out[j0:j1, i0:i1] = xp.matrix_transpose(out[i0:i1, j0:j1])
    for a0 in range(i0, i1, MIRROR_STEP):
        a1 = min(a0 + MIRROR_STEP, i1)
        if a0 > i0:
            out[a0:a1, i0:a0] = xp.matrix_transpose(out[i0:a0, a0:a1])
        sub = out[a0:a1, a0:a1]
        below = be.tril_mask(a1 - a0)
        sub[...] = xp.where(below, xp.matrix_transpose(sub), sub)


def build_gram(X, kernel: Kernel, *, out=None, options: Options | None = None,
               backend=None):
    """Build the symmetric Gram matrix K_ij = k(x_i, x_j) in blocks, on a backend.

    Parameters
    ----------
    X : array (n, d)
        Rows are points (host or the backend's). Cast (once) to ``options.dtype``.
    kernel : Kernel
    out : array (n, n), optional
        C-contiguous buffer to fill (e.g. a memmap, or device memory).
        Allocated on the backend when omitted.
    options : Options
        ``dtype``, ``block_size`` (rows per panel), ``n_jobs`` (host threads; with
        more than one, BLAS is pinned to one thread per panel), ``progress``.
    backend : Backend, optional
        Where K is built (default: ``out``'s, else NumPy in host memory).

    Returns
    -------
    K : array (n, n) — ``out`` when given. The diagonal holds exact
    k(x_i, x_i) (no cancellation from the distance expansion).
    """
    opts = options or Options()
    be = backend or (backend_of(out) if out is not None else get_backend("numpy"))
    n = X.shape[0]
    # a given buffer decides the dtype; otherwise the options do
    dtype = be.dtype_name(out) if out is not None else working_dtype(opts.dtype, n)
    if dtype not in ("float32", "float64"):
        raise InputError(f"Gram buffer must be float32 or float64, got {dtype}")
    Xd = be.asarray(X, dtype) if isinstance(X, np.ndarray) else be.astype(X, dtype)
    if out is None:
        out = be.empty((n, n), dtype)
    if tuple(out.shape) != (n, n):
        raise InputError(f"Gram buffer must be a C-contiguous {n}x{n} float32/float64 array, "
                         f"got {tuple(out.shape)} {out.dtype}")
    if be.name == "numpy" and not out.flags.c_contiguous:
        raise InputError(f"Gram buffer must be a C-contiguous {n}x{n} float32/float64 array, "
                         f"got a non-contiguous {out.dtype} array")
    sq = be.row_sq_norms(Xd)
    rows = gram_rows(opts.block_size, on_device=be.name != "numpy")
    # Panels are handed out in order, the big ones (panel i costs ~ n - i0
    # columns) first, so the threads finish together.
    panels = list(enumerate(_panel_bounds(n, rows)))
    n_jobs = max(1, min(opts.n_jobs, len(panels))) if be.name == "numpy" else 1

    def work(idx, i0, i1):
        _build_panel(Xd, sq, kernel, out, i0, i1)
        return idx

    bar = tqdm(total=len(panels), desc="gram", unit="panel", disable=not opts.progress,
               delay=1.0)
    limit = 1 if n_jobs > 1 else None
    with threadpool_limits(limits=limit, user_api="blas"):
        results = Parallel(n_jobs=n_jobs, backend="threading", return_as="generator_unordered")(
            delayed(work)(idx, i0, i1) for idx, (i0, i1) in panels)
        for _ in results:
            bar.update()
    bar.close()
    sq_host = be.to_host(sq)
    be.set_diagonal(out, kernel.diag(np.empty((n, 0)), sq_host))
    return out


def build_gram_tiles(X, kernel: Kernel, store, *, options: Options | None = None) -> None:
    """Fill a :class:`kernelfit.solvers.tiles.HostTileStore` with K's lower tiles.

    Each tile is computed on the store's backend (one GEMM and the kernel map)
    and copied to its slot; the store's ``k_diag`` gets the exact diagonal, and
    its ``rebuild`` this function, so a jitter retry can start again.
    """
    opts = options or Options()
    be = store.backend
    Xd = be.asarray(X, store.dtype) if isinstance(X, np.ndarray) else be.astype(X, store.dtype)
    sq = be.row_sq_norms(Xd)
    T = store.tile
    buf = be.empty((T, T), store.dtype)
    # exact k(x, x) (no cancellation), written into each diagonal tile as it is built:
    # a resumed store's factored tiles are never touched again
    store.k_diag = kernel.diag(np.empty((store.n, 0)), be.to_host(sq))
    bar = tqdm(total=store.n_tiles * (store.n_tiles + 1) // 2, desc="gram (tiles)",
               unit="tile", disable=not opts.progress, delay=1.0)
    for I in range(store.n_tiles):
        i0, i1 = store.bounds(I)
        for K in range(I + 1):
            if not store.is_built(I, K):
                k0, k1 = store.bounds(K)
                blk = kernel.block(Xd[i0:i1, :], Xd[k0:k1, :], sq[i0:i1], sq[k0:k1],
                                   out=buf[:i1 - i0, :k1 - k0])
                if I == K:
                    be.set_diagonal(blk, store.k_diag[i0:i1])
                store.write_tile(I, K, blk)
                store.mark_built(I, K)
            bar.update()
    bar.close()
    be.synchronize()
    store.rebuild = lambda s: build_gram_tiles(X, kernel, s, options=opts)


def cross_gram_matvec(kernel: Kernel, X_rows, X_cols, V, *, dtype="float32", block_size=1024,
                      sq_cols=None, backend=None, diag=None) -> np.ndarray:
    """Compute k(X_rows, X_cols) @ V block by block, never holding the whole matrix.

    The kernel block is evaluated in ``dtype`` on ``backend`` (default NumPy);
    the product is accumulated in float64 (V's magnitudes can be large for an
    ill-conditioned interpolant, and their sum cancels). Returns a host array.

    ``diag``: where X_rows are X_cols themselves (K V), the exact k(x_i, x_i),
    written over each block's diagonal as the Gram builders write it: the kernel
    map's own value there carries the inner product's rounding, which the nngp /
    ntk arc-cosine at c = 1 - eps magnifies to ~sqrt(eps).
    """
    be = backend or get_backend("numpy")
    dtype = np.dtype(dtype).name
    Xc = be.asarray(X_cols, dtype) if isinstance(X_cols, np.ndarray) else X_cols
    if sq_cols is None and kernel.needs_norms:
        sq_cols = be.row_sq_norms(Xc)
    V = np.asarray(V, dtype=np.float64)
    Vd = be.asarray(V, "float64")
    out = np.empty((len(X_rows),) + V.shape[1:])
    for r0 in range(0, len(X_rows), block_size):
        Xb = be.asarray(np.asarray(X_rows[r0:r0 + block_size]), dtype)
        Kb = kernel.block(Xb, Xc, None, sq_cols)
        if diag is not None:
            m = Xb.shape[0]
            be.set_diagonal(Kb[:, r0:r0 + m], diag[r0:r0 + m])
        out[r0:r0 + Xb.shape[0]] = be.to_host(be.matmul(be.astype(Kb, "float64"), Vd))
    return out

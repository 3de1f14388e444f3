"""Gram matrices accumulated from streamed feature column chunks.

When the feature matrix Phi (n x D) is too large to hold (the random conv-net:
n = 50,000, D = 8 x 32,000), its columns arrive in chunks Phi_c and the inner
products accumulate, G += Phi_c Phi_c^T, in one preallocated n x n buffer.
Every kernel in :mod:`kernelfit.engine.kernels` is a function of <x, y>, ||x||^2 and
||y||^2, so once all chunks are in, :meth:`Kernel.from_inner` turns G into K
block by block, in place.

As in :mod:`kernelfit.engine.gram.panels`, only the upper-triangle row panels are computed
(block GEMMs, never a whole ``A @ A.T``: NumPy's SYRK path segfaults once
n^2 > 2^31), and K is mirrored at the end so both triangles hold it (the
tiled Cholesky needs that). The diagonal is written exactly.

Chunks of another backend (PyTorch tensors on a GPU, computed there by
:meth:`RandomConvFeatures.transform_columns_device`) are standardized and
accumulated on their device, in larger tiles and without host threads; the
NumPy path is unchanged. :func:`accumulate_streamed` stops before the kernel
map, so a selection can map copies of the same inner products for every
bandwidth.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from kernelfit.engine.backend import backend_of
from kernelfit.engine.gram.panels import mirror_panel
from kernelfit.engine.kernels import Kernel
from kernelfit.engine.sizes import DEVICE_STREAM_TILE, STREAM_COL_STEP
from kernelfit.errors import InputError
from kernelfit.options import Options


@dataclass
class StreamedInner:
    """Inner products accumulated from feature chunks, before any kernel map.

    ``G`` holds <phi_i, phi_j> in its upper-triangle tiles only (until
    :func:`finish_streamed` mirrors it), ``G_test`` the test-train block, and
    ``sq`` / ``sq_test`` the squared row norms in float64 -- all on the
    chunks' backend (NumPy arrays, or tensors on their device).
    """

    G: object
    G_test: object
    sq: object
    sq_test: object


def standardize_chunk(Phi_tr, Phi_te, dtype):
    """Scale each column to zero mean, unit variance with the training statistics.

    Statistics accumulate in float64 over row blocks (two passes, no
    cancellation) so no float64 copy of the chunk is ever made: at n = 50,000
    and 8,000 columns that copy alone would be 3.2 GB. Constant training
    columns (std 0) are only centred: dividing would turn rounding noise into
    unit-variance features. Works on any backend's arrays (NumPy, PyTorch
    CPU/CUDA, ...): the result lies where the chunk lies.
    """
    b = backend_of(Phi_tr)
    xp, f64 = b.xp, b.dtype("float64")
    n, step = Phi_tr.shape[0], STREAM_COL_STEP
    mean = xp.zeros(Phi_tr.shape[1], dtype=f64, device=b.device)
    for i in range(0, n, step):
        mean += xp.sum(Phi_tr[i:i + step], axis=0, dtype=f64)
    mean /= n
    var = xp.zeros_like(mean)
    for i in range(0, n, step):
        dev = xp.astype(Phi_tr[i:i + step], f64) - mean
        dev *= dev
        var += xp.sum(dev, axis=0)
    std = xp.sqrt(var / n)
    std = xp.where(std == 0, xp.ones_like(std), std)
    dt = b.dtype(np.dtype(dtype).name)
    scale = xp.astype(1.0 / std, dt)
    out = []
    for Phi in (Phi_tr, Phi_te):
        Y = xp.asarray(Phi, dtype=dt, copy=True)        # the one copy, in K's precision
        Y -= xp.astype(mean, dt)
        Y *= scale
        out.append(Y)
    return out[0], out[1]


def _tiles(n: int, block: int, col_step: int = STREAM_COL_STEP):
    """Upper-triangle tiles (i0, i1, j0, j1) with j0 >= i0, biggest row panels first."""
    out = []
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        for j0 in range(i0, n, col_step):
            out.append((i0, i1, j0, min(j0 + col_step, n)))
    return out


def build_gram_streamed(chunks, n_train: int, n_test: int, kernel: Kernel, *,
                        options: Options | None = None, standardize: bool = True,
                        dtype: str = "float32"):
    """Accumulate K_train (n x n) and K_test_train (m x n) from feature column chunks.

    Parameters
    ----------
    chunks : iterable of (array (n, d_c), array (m, d_c))
        Column chunks of the training and test features, e.g.
        ``fmap.iter_column_chunks(train_images, test_images, chunk_filters)``.
        NumPy arrays, or arrays of another backend (PyTorch tensors on a GPU):
        K is then accumulated and returned on that device.
    n_train, n_test : int
        n and m; every chunk must have these row counts (m may be 0).
    kernel : Kernel
        Applied once at the end to the accumulated inner products.
    options : Options
        ``block_size`` (rows per panel), ``n_jobs`` (threads, BLAS pinned to one
        each when > 1) and ``progress`` are used (NumPy chunks; a device uses
        its own tiles and its own parallelism).
    standardize : bool
        Scale every feature column to zero mean and unit variance with the
        training statistics of its chunk (test columns use the same statistics).
    dtype : {"float32", "float64"}
        Accumulation and storage precision of K.

    Returns
    -------
    K : array (n, n), symmetric, both triangles filled, exact diagonal.
    K_test : array (m, n)
    """
    opts = options or Options()
    acc = accumulate_streamed(chunks, n_train, n_test, options=opts, standardize=standardize,
                              dtype=dtype)
    finish_streamed(acc, kernel, opts.block_size)
    return acc.G, acc.G_test


def accumulate_streamed(chunks, n_train: int, n_test: int, *, options: Options | None = None,
                        standardize: bool = True, dtype: str = "float32") -> StreamedInner:
    """The inner products and squared norms of streamed chunks, no kernel applied yet.

    What :func:`build_gram_streamed` does before its kernel map (same
    parameters); a caller that tries several kernels on the same features
    (a bandwidth selection) keeps this and maps copies of it.
    """
    opts = options or Options()
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise InputError(f"streamed Gram dtype must be float32 or float64, got {dtype}")
    n, m = int(n_train), int(n_test)
    if n < 1 or m < 0:
        raise InputError(f"need n_train >= 1 and n_test >= 0, got {n_train}, {n_test}")
    chunks = iter(chunks)
    first = next(chunks, None)
    if first is None:
        raise InputError("no feature chunks were given")
    b = backend_of(first[0])
    if b.name == "numpy":
        block, col_step, n_jobs = opts.block_size, STREAM_COL_STEP, max(1, int(opts.n_jobs))
    else:
        # one queue of large GEMMs keeps a device busy; host threads would only contend
        block, col_step, n_jobs = DEVICE_STREAM_TILE, DEVICE_STREAM_TILE, 1
    acc = StreamedInner(b.zeros((n, n), dtype.name), b.zeros((m, n), dtype.name),
                        b.zeros((n,), "float64"), b.zeros((m,), "float64"))
    tiles = _tiles(n, block, col_step)
    bar = tqdm(desc="gram (streamed)", unit="chunk", disable=not opts.progress)
    for seen, (Phi_tr, Phi_te) in enumerate(itertools.chain([first], chunks)):
        if b.name == "numpy":
            Phi_tr, Phi_te = np.asarray(Phi_tr), np.asarray(Phi_te)
        if (len(Phi_tr.shape) != 2 or Phi_tr.shape[0] != n
                or tuple(Phi_te.shape) != (m, Phi_tr.shape[1])):
            raise InputError(f"chunk {seen}: expected ({n}, d) and ({m}, d) feature blocks, got "
                             f"{tuple(Phi_tr.shape)} and {tuple(Phi_te.shape)}")
        if standardize:
            Phi_tr, Phi_te = standardize_chunk(Phi_tr, Phi_te, dtype)
        elif b.name == "numpy":
            Phi_tr = np.ascontiguousarray(Phi_tr, dtype=dtype)
            Phi_te = np.ascontiguousarray(Phi_te, dtype=dtype)
        else:
            Phi_tr, Phi_te = b.astype(Phi_tr, dtype.name), b.astype(Phi_te, dtype.name)
        _accumulate(acc.G, acc.G_test, Phi_tr, Phi_te, tiles, block, col_step, n_jobs)
        acc.sq += _row_sq_norms(Phi_tr)
        acc.sq_test += _row_sq_norms(Phi_te)
        bar.update()
    bar.close()
    return acc


def _row_sq_norms(Phi):
    """Squared row norms of a chunk in float64, where the chunk lies."""
    if isinstance(Phi, np.ndarray):
        return np.einsum("ij,ij->i", Phi, Phi, dtype=np.float64)
    b = backend_of(Phi)
    xp, f64 = b.xp, b.dtype("float64")
    out = xp.zeros(Phi.shape[0], dtype=f64, device=b.device)
    for i in range(0, Phi.shape[0], STREAM_COL_STEP):     # bounds the float64 copy
        blk = xp.astype(Phi[i:i + STREAM_COL_STEP], f64)
        out[i:i + STREAM_COL_STEP] = xp.vecdot(blk, blk)
    return out


def _gemm_add_(C, A, B) -> None:
    """C += A @ B^T into the view C (PyTorch: addmm_, which has no product temporary)."""
    if hasattr(C, "addmm_"):
        C.addmm_(A, B.mT)
    else:
        C += A @ B.T


def _accumulate(G, G_te, Phi, Phi_te, tiles, block: int, col_step: int, n_jobs: int) -> None:
    def tile(i0, i1, j0, j1):
        _gemm_add_(G[i0:i1, j0:j1], Phi[i0:i1], Phi[j0:j1])

    def test_rows(r0, r1):
        for j0 in range(0, Phi.shape[0], col_step):
            j1 = min(j0 + col_step, Phi.shape[0])
            _gemm_add_(G_te[r0:r1, j0:j1], Phi_te[r0:r1], Phi[j0:j1])

    jobs = [delayed(tile)(*t) for t in tiles]
    jobs += [delayed(test_rows)(r, min(r + block, Phi_te.shape[0]))
             for r in range(0, Phi_te.shape[0], block)]
    if n_jobs == 1 or len(jobs) == 1:
        for job in jobs:
            job[0](*job[1])
        return
    # tiles are disjoint, so threads never write the same element
    with threadpool_limits(limits=1, user_api="blas"):
        Parallel(n_jobs=n_jobs, backend="threading")(jobs)


def finish_streamed(acc: StreamedInner, kernel: Kernel, block: int) -> None:
    """Inner products -> kernel values in row blocks, in place; mirror; exact diagonal.

    With the linear kernel this only mirrors G and writes its exact diagonal
    (the float64 norms): the full symmetric inner-product matrix.
    """
    G, G_te, sq, sq_te = acc.G, acc.G_test, acc.sq, acc.sq_test
    n = G.shape[0]
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        panel = G[i0:i1, i0:n]
        kernel.from_inner(panel, sq[i0:i1], sq[i0:n])
        mirror_panel(G, i0, i1)
    for r0 in range(0, G_te.shape[0], block):
        r1 = min(r0 + block, G_te.shape[0])
        kernel.from_inner(G_te[r0:r1], sq_te[r0:r1], sq)
    b = backend_of(G)
    b.set_diagonal(G, kernel.diag(np.empty((n, 0)), b.to_host(sq)))

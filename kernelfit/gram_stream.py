"""Gram matrices accumulated from streamed feature column chunks.

When the feature matrix Phi (n x D) is too large to hold (the random conv-net:
n = 50,000, D = 8 x 32,000), its columns arrive in chunks Phi_c and the inner
products accumulate, G += Phi_c Phi_c^T, in one preallocated n x n buffer.
Every kernel in :mod:`kernelfit.kernels` is a function of <x, y>, ||x||^2 and
||y||^2, so once all chunks are in, :meth:`Kernel.from_inner` turns G into K
block by block, in place.

As in :mod:`kernelfit.gram`, only the upper-triangle row panels are computed
(block GEMMs, never a whole ``A @ A.T``: NumPy's SYRK path segfaults once
n^2 > 2^31), and K is mirrored at the end so both triangles hold it (the
tiled Cholesky needs that). The diagonal is written exactly.
"""

from __future__ import annotations

import numpy as np
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .errors import InputError
from .gram import mirror_panel
from .kernels import Kernel
from .options import Options

# Columns per accumulation tile: bounds the GEMM temporary to block x _COL_STEP.
_COL_STEP = 4096


def standardize_chunk(Phi_tr: np.ndarray, Phi_te: np.ndarray, dtype):
    """Scale each column to zero mean, unit variance with the training statistics.

    Statistics accumulate in float64 over row blocks (two passes, no
    cancellation) so no float64 copy of the chunk is ever made: at n = 50,000
    and 8,000 columns that copy alone would be 3.2 GB. Constant training
    columns (std 0) are only centred: dividing would turn rounding noise into
    unit-variance features.
    """
    n, step = len(Phi_tr), _COL_STEP
    mean = np.zeros(Phi_tr.shape[1])
    for i in range(0, n, step):
        mean += Phi_tr[i:i + step].sum(axis=0, dtype=np.float64)
    mean /= n
    var = np.zeros_like(mean)
    for i in range(0, n, step):
        dev = Phi_tr[i:i + step].astype(np.float64) - mean
        var += np.einsum("ij,ij->j", dev, dev)
    std = np.sqrt(var / n)
    std[std == 0] = 1.0
    scale = (1.0 / std).astype(dtype)
    out = []
    for Phi in (Phi_tr, Phi_te):
        Y = np.array(Phi, dtype=dtype, order="C")       # the one copy, in K's precision
        Y -= mean.astype(dtype)
        Y *= scale
        out.append(Y)
    return out[0], out[1]


def _tiles(n: int, block: int):
    """Upper-triangle tiles (i0, i1, j0, j1) with j0 >= i0, biggest row panels first."""
    out = []
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        for j0 in range(i0, n, _COL_STEP):
            out.append((i0, i1, j0, min(j0 + _COL_STEP, n)))
    return out


def build_gram_streamed(chunks, n_train: int, n_test: int, kernel: Kernel, *,
                        options: Options | None = None, standardize: bool = True,
                        dtype: str = "float32"):
    """Accumulate K_train (n x n) and K_test_train (m x n) from feature column chunks.

    Parameters
    ----------
    chunks : iterable of (ndarray (n, d_c), ndarray (m, d_c))
        Column chunks of the training and test features, e.g.
        ``fmap.iter_column_chunks(train_images, test_images, chunk_filters)``.
    n_train, n_test : int
        n and m; every chunk must have these row counts (m may be 0).
    kernel : Kernel
        Applied once at the end to the accumulated inner products.
    options : Options
        ``block_size`` (rows per panel), ``n_jobs`` (threads, BLAS pinned to one
        each when > 1) and ``progress`` are used.
    standardize : bool
        Scale every feature column to zero mean and unit variance with the
        training statistics of its chunk (test columns use the same statistics).
    dtype : {"float32", "float64"}
        Accumulation and storage precision of K.

    Returns
    -------
    K : ndarray (n, n), symmetric, both triangles filled, exact diagonal.
    K_test : ndarray (m, n)
    """
    opts = options or Options()
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise InputError(f"streamed Gram dtype must be float32 or float64, got {dtype}")
    n, m = int(n_train), int(n_test)
    if n < 1 or m < 0:
        raise InputError(f"need n_train >= 1 and n_test >= 0, got {n_train}, {n_test}")
    G = np.zeros((n, n), dtype=dtype)
    G_te = np.zeros((m, n), dtype=dtype)
    sq = np.zeros(n)
    sq_te = np.zeros(m)
    tiles = _tiles(n, opts.block_size)
    n_jobs = max(1, int(opts.n_jobs))
    seen = 0
    bar = tqdm(desc="gram (streamed)", unit="chunk", disable=not opts.progress)
    for Phi_tr, Phi_te in chunks:
        Phi_tr, Phi_te = np.asarray(Phi_tr), np.asarray(Phi_te)
        if Phi_tr.ndim != 2 or Phi_tr.shape[0] != n or Phi_te.shape != (m, Phi_tr.shape[1]):
            raise InputError(f"chunk {seen}: expected ({n}, d) and ({m}, d) feature blocks, got "
                             f"{Phi_tr.shape} and {Phi_te.shape}")
        if standardize:
            Phi_tr, Phi_te = standardize_chunk(Phi_tr, Phi_te, dtype)
        else:
            Phi_tr = np.ascontiguousarray(Phi_tr, dtype=dtype)
            Phi_te = np.ascontiguousarray(Phi_te, dtype=dtype)
        _accumulate(G, G_te, Phi_tr, Phi_te, tiles, opts.block_size, n_jobs)
        sq += np.einsum("ij,ij->i", Phi_tr, Phi_tr, dtype=np.float64)
        sq_te += np.einsum("ij,ij->i", Phi_te, Phi_te, dtype=np.float64)
        seen += 1
        bar.update()
    bar.close()
    if seen == 0:
        raise InputError("no feature chunks were given")
    _finish(G, G_te, sq, sq_te, kernel, opts.block_size)
    return G, G_te


def _accumulate(G, G_te, Phi, Phi_te, tiles, block: int, n_jobs: int) -> None:
    def tile(i0, i1, j0, j1):
        G[i0:i1, j0:j1] += Phi[i0:i1] @ Phi[j0:j1].T

    def test_rows(r0, r1):
        for j0 in range(0, len(Phi), _COL_STEP):
            j1 = min(j0 + _COL_STEP, len(Phi))
            G_te[r0:r1, j0:j1] += Phi_te[r0:r1] @ Phi[j0:j1].T

    jobs = [delayed(tile)(*t) for t in tiles]
    jobs += [delayed(test_rows)(r, min(r + block, len(Phi_te)))
             for r in range(0, len(Phi_te), block)]
    if n_jobs == 1 or len(jobs) == 1:
        for job in jobs:
            job[0](*job[1])
        return
    # tiles are disjoint, so threads never write the same element
    with threadpool_limits(limits=1, user_api="blas"):
        Parallel(n_jobs=n_jobs, backend="threading")(jobs)


def _finish(G, G_te, sq, sq_te, kernel: Kernel, block: int) -> None:
    """Inner products -> kernel values in row blocks; mirror; exact diagonal."""
    n = len(G)
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        panel = G[i0:i1, i0:n]
        kernel.from_inner(panel, sq[i0:i1], sq[i0:n])
        mirror_panel(G, i0, i1)
    for r0 in range(0, len(G_te), block):
        r1 = min(r0 + block, len(G_te))
        kernel.from_inner(G_te[r0:r1], sq_te[r0:r1], sq)
    G[np.diag_indices(n)] = kernel.diag(np.empty((n, 0)), sq)

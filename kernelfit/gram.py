"""Blocked Gram builders: in memory, or on disk (memmap, resumable).

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

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .atomic import write_json_atomic
from .backend import backend_of, get_backend
from .errors import InputError, StaleGramError
from .formats import human_bytes
from .kernels import Kernel, row_sq_norms
from .options import Options
from .plan import DEVICE_PANEL_ROWS, residual_rows

# Mirror the row panel into the lower triangle in square sub-blocks, so that the
# transposed (strided) reads stay within cache.
_MIRROR_STEP = 512


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
    step = _MIRROR_STEP if be.name == "numpy" else n
    for j0 in range(i1, n, step):
        j1 = min(j0 + step, n)
        out[j0:j1, i0:i1] = xp.matrix_transpose(out[i0:i1, j0:j1])
    for a0 in range(i0, i1, _MIRROR_STEP):
        a1 = min(a0 + _MIRROR_STEP, i1)
        if a0 > i0:
            out[a0:a1, i0:a0] = xp.matrix_transpose(out[i0:a0, a0:a1])
        sub = out[a0:a1, a0:a1]
        below = be.tril_mask(a1 - a0)
        sub[...] = xp.where(below, xp.matrix_transpose(sub), sub)


def build_gram(X, kernel: Kernel, *, out=None, options: Options | None = None,
               skip=(), on_panel_done=None, backend=None):
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
    skip : collection of int
        Panel indices already built (used by :func:`build_gram_on_disk` to resume).
    on_panel_done : callable(int), optional
        Called after each panel is written, in completion order.
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
    dtype = be.dtype_name(out) if out is not None else opts.resolve_dtype(n)
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
    skip = set(skip)
    rows = opts.block_size if be.name == "numpy" else max(opts.block_size, DEVICE_PANEL_ROWS)
    # Panels are handed out in order, the big ones (panel i costs ~ n - i0
    # columns) first, so the threads finish together.
    panels = [p for p in enumerate(_panel_bounds(n, rows)) if p[0] not in skip]
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
        for idx in results:
            if on_panel_done is not None:
                on_panel_done(idx)
            bar.update()
    bar.close()
    sq_host = be.to_host(sq)
    be.set_diagonal(out, kernel.diag(np.empty((n, 0)), sq_host))
    return out


def build_stored(X, kernel: Kernel, plan, backend, options: Options, *, X_device=None):
    """K where ``plan`` says it lives; returns (K or its tile store, residual operator or None).

    In memory (host or device) K is one in-place buffer whose upper triangle
    measures residuals; as host tiles streamed through a device it keeps no
    copy of K, so residuals are measured from the data on that device.
    ``X_device``: the points already on the backend's device (X is then the host copy).
    """
    src = X if X_device is None else X_device
    if plan.storage not in ("host tiles", "disk tiles"):
        return build_gram(src, kernel, options=options, backend=backend), None
    from .solvers.disk_tiles import DiskTileStore
    from .solvers.operators import KernelOperator
    from .solvers.tiles import HostTileStore
    if plan.storage == "disk tiles":
        fp = {**_fingerprint(np.asarray(X), kernel, plan.dtype, plan.tile),
              "layout": "lower tiles, tile-major npy"}
        path = Path(plan.scratch_dir) / f"K-{_digest(fp)}.tiles.npy"
        store = DiskTileStore(path, plan.n, plan.tile, plan.dtype, backend, fp)
        if options.progress and any(store.resumed.values()):
            print(f"kernelfit: resuming K in {path}: {store.resumed['tiles']} tiles built, "
                  f"{store.resumed['panels']} panels factored", file=sys.stderr)
    else:
        store = HostTileStore(plan.n, plan.tile, plan.dtype, backend)
    build_gram_tiles(src, kernel, store, options=options)
    op = KernelOperator(kernel, X, dtype=plan.dtype, block_size=residual_rows(plan.n),
                        backend=backend)
    return store, op


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


#: Sidecar of a finished on-disk K: what it holds (fingerprint) and its size.
META_SUFFIX = ".meta.json"
#: Sidecar of an unfinished one: fingerprint and the panels flushed so far.
PROGRESS_SUFFIX = ".progress"
# Rows of a stored K recomputed on every reuse (besides the whole diagonal):
# a cheap independent check that the bytes on disk are the K the record claims.
_SPOT_ROWS = 3


def _fingerprint(X, kernel: Kernel, dtype, block_size: int) -> dict:
    """Everything that decides the bytes of K: kernel, X's digest, n, dtype, layout."""
    X = np.ascontiguousarray(X)
    h = hashlib.sha256(json.dumps([X.shape, X.dtype.str]).encode())
    h.update(X.view(np.uint8).ravel())
    # The panel height is part of it: it fixes the GEMM shapes, hence the last
    # bits of every entry, and the meaning of the panel indices in the progress.
    return {"kernel": kernel.as_dict(), "x_sha256": h.hexdigest(), "n": int(X.shape[0]),
            "dtype": np.dtype(dtype).name, "block_size": int(block_size),
            "layout": "npy, C order, both triangles"}


def _digest(fp: dict) -> str:
    """A short name for a fingerprint (the tile file of that K)."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _differences(recorded, fp: dict) -> list[str]:
    if not isinstance(recorded, dict):
        return ["its record predates fingerprints (an older kernelfit) or is unreadable"]
    return ["X (the data) differs" if k == "x_sha256" else
            f"{k} differs (stored {recorded.get(k)!r}, asked {v!r})"
            for k, v in fp.items() if recorded.get(k) != v]


def _file_problems(path: Path, n: int, dtype) -> list[str]:
    """Header and size of the ``.npy`` against an (n, n) C-ordered ``dtype`` array."""
    try:
        with open(path, "rb") as fh:
            fmt = np.lib.format
            read_header = (fmt.read_array_header_1_0 if fmt.read_magic(fh) == (1, 0)
                           else fmt.read_array_header_2_0)
            shape, fortran, dt = read_header(fh)
            offset = fh.tell()
    except (OSError, ValueError) as err:
        return [f"unreadable .npy header ({err})"]
    problems = []
    if shape != (n, n) or fortran or dt != np.dtype(dtype):
        problems.append(f"header says {shape} {dt} fortran_order={fortran}, expected "
                        f"({n}, {n}) {np.dtype(dtype)} in C order")
    want = offset + n * n * np.dtype(dtype).itemsize
    size = path.stat().st_size
    if size != want:
        problems.append(f"{size} bytes on disk, a whole file has {want} "
                        f"({'truncated' if size < want else 'trailing bytes'})")
    return problems


def _spot_check(K, X, kernel: Kernel, dtype) -> list[str]:
    """Recompute the diagonal and a few rows of K; report entries that disagree."""
    n = len(X)
    Xd = np.ascontiguousarray(X, dtype=dtype)
    sq = row_sq_norms(Xd)
    diag = kernel.diag(Xd, sq)
    stored = np.asarray(K[np.arange(n), np.arange(n)], dtype=np.float64)
    rows = np.unique(np.linspace(0, n - 1, _SPOT_ROWS).astype(np.int64))
    ref = kernel.block(Xd[rows], Xd, sq[rows], sq).astype(np.float64)
    ref[np.arange(len(rows)), rows] = diag[rows]
    got = np.asarray(K[rows], dtype=np.float64)
    # Round-off of the distance expansion in another GEMM shape stays far below
    # sqrt(eps) of the row's scale; a zeroed page or another kernel does not.
    tol = np.sqrt(np.finfo(dtype).eps)
    bad = []
    if not np.allclose(stored, diag, rtol=tol, atol=tol * np.abs(diag).max(initial=0)):
        bad.append(f"{int((~np.isclose(stored, diag, rtol=tol)).sum())} diagonal entries "
                   "differ from k(x_i, x_i)")
    scale = np.abs(ref).max(axis=1, keepdims=True)
    wrong = ~(np.abs(got - ref) <= tol * (scale + np.abs(ref)))
    if wrong.any():
        bad.append(f"{int(wrong.sum())} entries of rows {rows.tolist()} differ from a "
                   "recomputation")
    return bad


def build_gram_on_disk(X, kernel: Kernel, path, *, options: Options | None = None,
                       rebuild: bool = True) -> np.memmap:
    """Build K into a ``.npy`` memmap at ``path``; reuse it or resume a killed build.

    Two sidecars say what the file holds. While building, ``path + '.progress'``
    (JSON: the fingerprint, and the panels flushed to disk; a panel is recorded
    only after it is flushed, so a build killed at any point resumes without
    trusting a half-written panel). When done, ``path + '.meta.json'`` (the
    fingerprint and the file size), written after the data are flushed.

    A stored K is reused only when its fingerprint (kernel and its parameters,
    sha256 of X, n, dtype, panel height, layout) equals the one asked for, the
    ``.npy`` header and size are those of a whole (n, n) array, and the whole
    diagonal and a few rows agree with a recomputation. Anything else is
    rebuilt (or refused, with ``rebuild=False``). A resumed build is
    bit-identical to an uninterrupted one.

    Parameters
    ----------
    X : ndarray (n, d)
    kernel : Kernel
    path : str or Path
        The ``.npy`` file.
    options : Options, optional
        ``dtype``, ``block_size``, ``n_jobs``, ``progress`` as for :func:`build_gram`.
    rebuild : bool
        What to do with a file at ``path`` that does not hold this K: rebuild it
        (default; a line on stderr says why when ``options.progress``), or raise.

    Returns
    -------
    numpy.memmap
        K, opened read-write.

    Raises
    ------
    StaleGramError
        ``rebuild=False`` and the file holds another K, or is damaged; the
        message lists what differs.
    """
    opts = options or Options()
    path = Path(path)
    prog = path.with_name(path.name + PROGRESS_SUFFIX)
    meta_path = path.with_name(path.name + META_SUFFIX)
    n = len(X)
    opts = opts.replace(dtype=opts.resolve_dtype(n))
    fp = _fingerprint(np.asarray(X), kernel, opts.dtype, opts.block_size)
    done: set[int] = set()
    if path.exists():
        meta, state = _read_json(meta_path), _read_json(prog)
        if meta is not None:
            reasons = _differences(meta.get("fingerprint"), fp) or _file_problems(
                path, n, opts.dtype)
            if not reasons:
                K = np.load(path, mmap_mode="r+")
                reasons = _spot_check(K, X, kernel, opts.dtype)
                if not reasons:
                    if opts.progress:
                        print(f"kernelfit: reusing K from {path} (fingerprint, size and a "
                              "recomputed diagonal agree)", file=sys.stderr)
                    return K
                del K
        elif state is not None:
            reasons = _differences(state.get("fingerprint"), fp) or _file_problems(
                path, n, opts.dtype)
            if not reasons:
                done = {int(i) for i in state.get("done", [])}
        else:
            reasons = [f"neither {meta_path.name} nor {prog.name} says what it holds"]
        if reasons:
            if not rebuild:
                raise StaleGramError(path, reasons)
            if opts.progress:
                print(f"kernelfit: rebuilding {path}: " + "; ".join(reasons), file=sys.stderr)
    # From here until the new record lands, nothing claims the file is whole.
    meta_path.unlink(missing_ok=True)
    if not done:
        K = np.lib.format.open_memmap(path, mode="w+", dtype=opts.dtype, shape=(n, n))
    else:
        K = np.load(path, mmap_mode="r+")
    write_json_atomic(prog, {"fingerprint": fp, "done": sorted(done)})

    def mark(idx):
        K.flush()
        done.add(idx)
        write_json_atomic(prog, {"fingerprint": fp, "done": sorted(done)})

    build_gram(X, kernel, out=K, options=opts, skip=done, on_panel_done=mark)
    K.flush()
    with open(path, "rb") as fh:  # the data on disk before the record that vouches for them
        os.fsync(fh.fileno())
    write_json_atomic(meta_path, {"fingerprint": fp, "bytes": path.stat().st_size})
    prog.unlink()
    if opts.progress:
        print(f"kernelfit: K ({n} x {n} {np.dtype(opts.dtype).name}, "
              f"{human_bytes(path.stat().st_size)}) written to {path}", file=sys.stderr)
    return K


def cross_gram_matvec(kernel: Kernel, X_rows, X_cols, V, *, dtype="float32", block_size=1024,
                      sq_cols=None, backend=None) -> np.ndarray:
    """Compute k(X_rows, X_cols) @ V block by block, never holding the whole matrix.

    The kernel block is evaluated in ``dtype`` on ``backend`` (default NumPy);
    the product is accumulated in float64 (V's magnitudes can be large for an
    ill-conditioned interpolant, and their sum cancels). Returns a host array.
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
        out[r0:r0 + Xb.shape[0]] = be.to_host(be.matmul(be.astype(Kb, "float64"), Vd))
    return out

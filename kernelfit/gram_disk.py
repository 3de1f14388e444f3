"""K on disk: a ``.npy`` memmap built panel by panel, fingerprinted, resumable.

A stored K is reused only when it provably holds the K asked for (the
fingerprint of kernel, data, dtype and layout; the file's header and size; the
diagonal and a few rows recomputed); a killed build resumes from its last
flushed panel, bit-identical to an uninterrupted one. The fingerprint also
names the tile file of an out-of-core factor (:mod:`kernelfit.gram_store`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from .atomic import write_json_atomic
from .errors import StaleGramError
from .formats import human_bytes
from .gram import build_gram
from .kernels import Kernel, row_sq_norms
from .options import Options

#: Sidecar of a finished on-disk K: what it holds (fingerprint) and its size.
META_SUFFIX = ".meta.json"
#: Sidecar of an unfinished one: fingerprint and the panels flushed so far.
PROGRESS_SUFFIX = ".progress"
# Rows of a stored K recomputed on every reuse (besides the whole diagonal):
# a cheap independent check that the bytes on disk are the K the record claims.
_SPOT_ROWS = 3


def fingerprint(X, kernel: Kernel, dtype, block_size: int) -> dict:
    """Everything that decides the bytes of K: kernel, X's digest, n, dtype, layout."""
    X = np.ascontiguousarray(X)
    h = hashlib.sha256(json.dumps([X.shape, X.dtype.str]).encode())
    h.update(X.view(np.uint8).ravel())
    # The panel height is part of it: it fixes the GEMM shapes, hence the last
    # bits of every entry, and the meaning of the panel indices in the progress.
    return {"kernel": kernel.as_dict(), "x_sha256": h.hexdigest(), "n": int(X.shape[0]),
            "dtype": np.dtype(dtype).name, "block_size": int(block_size),
            "layout": "npy, C order, both triangles"}


def digest(fp: dict) -> str:
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
    fp = fingerprint(np.asarray(X), kernel, opts.dtype, opts.block_size)
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

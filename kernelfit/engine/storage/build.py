"""K where the plan puts it: in memory (host or device), in host tiles, or in tiles on disk."""

from __future__ import annotations

import hashlib
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from kernelfit.engine.gram.panels import build_gram, build_gram_tiles
from kernelfit.engine.kernels import Kernel
from kernelfit.engine.sizes import residual_rows
from kernelfit.options import Options


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


def tile_file(X, kernel: Kernel, plan) -> tuple[Path, dict]:
    """The tile file of K on disk and its fingerprint (X's bytes, kernel, dtype, tile).

    The file is named by the fingerprint's digest, so another K never lands on
    it; the fingerprint in its progress record is checked again on reuse.
    """
    fp = {**fingerprint(np.asarray(X), kernel, plan.dtype, plan.tile),
          "layout": "lower tiles, tile-major npy"}
    return Path(plan.scratch_dir) / f"K-{digest(fp)}.tiles.npy", fp


def build_stored(X, kernel: Kernel, plan, backend, options: Options, *, X_device=None):
    """K where ``plan`` says it lives; returns (K or its tile store, residual operator or None).

    In memory (host or device) K is one in-place buffer whose upper triangle
    measures residuals; as host tiles streamed through a device it keeps no
    copy of K, so residuals are measured from the data on that device.
    ``X_device``: the points already on the backend's device (X is then the host copy).

    On disk the store holds its scratch folder's lock until it is closed
    (:func:`stored_for_fit` closes it); a build that fails closes it, keeping
    the tiles built so far for the next run to resume from.
    """
    src = X if X_device is None else X_device
    if plan.storage not in ("host tiles", "disk tiles"):
        return build_gram(src, kernel, options=options, backend=backend), None
    from kernelfit.engine.storage.disk_tiles import DiskTileStore
    from kernelfit.engine.storage.operators import KernelOperator
    from kernelfit.engine.storage.tiles import HostTileStore
    if plan.storage == "disk tiles":
        path, fp = tile_file(X, kernel, plan)
        store = DiskTileStore(path, plan.n, plan.tile, plan.dtype, backend, fp)
        if store.repair:
            # Said whether or not progress is shown: a tile that changed on disk
            # is news about the disk, not about the run's progress.
            print(f"kernelfit: {store.repair}", file=sys.stderr)
        if options.progress and any(store.resumed.values()):
            print(f"kernelfit: resuming K in {path}: {store.resumed['tiles']} tiles built, "
                  f"{store.resumed['panels']} panels factored", file=sys.stderr)
    else:
        store = HostTileStore(plan.n, plan.tile, plan.dtype, backend)
    try:
        build_gram_tiles(src, kernel, store, options=options)
    except BaseException:
        close_stored(store, remove=False)
        raise
    op = KernelOperator(kernel, X, dtype=plan.dtype, block_size=residual_rows(plan.n),
                        backend=backend)
    return store, op


def close_stored(K, *, remove: bool) -> None:
    """Let go of K's scratch tiles (deleting them when ``remove``); nothing for K in memory."""
    from kernelfit.engine.storage.disk_tiles import DiskTileStore
    if isinstance(K, DiskTileStore):
        K.close(remove=remove)


@contextmanager
def stored_for_fit(X, kernel: Kernel, plan, backend, options: Options, *, X_device=None):
    """:func:`build_stored` for one fit: yields (K, operator), then lets go of the scratch.

    K's tiles on disk are deleted when the block ends normally (the fit has its
    answer) unless ``options.keep_scratch``; an exception or a kill keeps them,
    which is what the next run of the same command resumes from.
    """
    K, op = build_stored(X, kernel, plan, backend, options, X_device=X_device)
    try:
        yield K, op
    except BaseException:
        close_stored(K, remove=False)
        raise
    close_stored(K, remove=not options.keep_scratch)

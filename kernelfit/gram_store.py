"""K where the plan puts it: in memory (host or device), in host tiles, or in tiles on disk."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .gram import build_gram, build_gram_tiles
from .gram_disk import digest, fingerprint
from .kernels import Kernel
from .options import Options
from .plan import residual_rows


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
        fp = {**fingerprint(np.asarray(X), kernel, plan.dtype, plan.tile),
              "layout": "lower tiles, tile-major npy"}
        path = Path(plan.scratch_dir) / f"K-{digest(fp)}.tiles.npy"
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

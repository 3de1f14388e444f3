"""The Gram matrix in t x t tiles on the workers, from one scattered copy of X."""

from __future__ import annotations

import math
import os
import time

import numpy as np

from kernelfit.engine.gram.panels import mirror_panel
from kernelfit.engine.kernels import Kernel, row_sq_norms
from kernelfit.engine.sizes import DASK_TILE

# Seconds to wait for a --scheduler ADDRESS to answer before giving up.
CONNECT_TIMEOUT_S = 10


def tiling(n: int, tile_size: int | None = None) -> tuple[int, int]:
    """(t, T): tile width and tiles per side, T t >= n with less than one tile of padding.

    t is the target width evened out over the T tiles (n = 20,000 with the
    target 2,048 gives 10 tiles of 2,000: no padding at all).
    """
    target = int(tile_size or DASK_TILE)
    T = max(1, math.ceil(n / target))
    t = math.ceil(n / T)
    return t, math.ceil(n / t)


def _gram_tile(X, sq, kernel: Kernel, n: int, t: int, i: int, j: int) -> np.ndarray:
    """K[I, J] for tiles I <= J (on a worker); padded rows/columns are 0, padded diagonal 1."""
    i0, j0 = i * t, j * t
    i1, j1 = min(i0 + t, n), min(j0 + t, n)
    out = np.zeros((t, t), dtype=X.dtype)
    kernel.block(X[i0:i1], X[j0:j1], sq[i0:i1], sq[j0:j1], out=out[:i1 - i0, :j1 - j0])
    if i == j:
        mirror_panel(out, 0, t)             # exactly symmetric, like the in-memory builder
        diag = np.ones(t)                   # the identity block of the padding
        diag[:i1 - i0] = kernel.diag(X[i0:i1], sq[i0:i1])   # exact k(x, x), as build_gram
        out[np.diag_indices(t)] = diag
    return out


def build_gram_dask(client, X, kernel: Kernel, *, dtype, t: int, T: int):
    """K as a persisted (T t) x (T t) dask array of t x t tiles, built on the workers.

    Returns ``(K, seconds, spread)``: ``spread["workers"]`` maps each worker's
    address to the upper tiles it computed, the seconds its tile tasks ran and
    the CPU seconds its process spent during the build; ``spread["concurrency"]``
    is the tile tasks' total run time over the span from the first start to the
    last stop (2.0: two workers computed side by side all along), a measure of
    how the work was spread that, unlike CPU / wall, other load on the machine
    does not lower.
    """
    import dask.array as da
    from distributed import get_task_stream, wait

    X = np.ascontiguousarray(X, dtype=dtype)
    n = len(X)
    cpu0 = client.run(_process_cpu_seconds)
    t0 = time.perf_counter()
    with get_task_stream(client=client) as stream:
        # Scattered once, to every worker: a tile task then carries only its indices.
        X_f = client.scatter(X, broadcast=True, hash=False)
        sq_f = client.scatter(row_sq_norms(X), broadcast=True, hash=False)
        upper = {(i, j): client.submit(_gram_tile, X_f, sq_f, kernel, n, t, i, j, pure=False)
                 for i in range(T) for j in range(i, T)}
        wait(list(upper.values()))
    seconds = time.perf_counter() - t0
    cpu1 = client.run(_process_cpu_seconds)
    spread = _spread(stream.data, {f.key for f in upper.values()},
                     {w: cpu1[w] - cpu0[w] for w in cpu1})
    blocks = [[None] * T for _ in range(T)]
    for (i, j), fut in upper.items():
        blocks[i][j] = da.from_delayed(fut, shape=(t, t), dtype=X.dtype)
        if i != j:
            blocks[j][i] = blocks[i][j].T   # runs where the upper tile lives: a view there
    K = client.persist(da.block(blocks))
    wait(K)
    return K, seconds, spread


def _spread(stream: list, keys: set, cpu: dict) -> dict:
    """Tiles, task seconds and CPU seconds per worker, and the tasks' mean concurrency."""
    workers = {w: {"tiles": 0, "task_seconds": 0.0, "cpu_seconds": c} for w, c in cpu.items()}
    spans = []
    for task in stream:
        if task["key"] not in keys:
            continue
        for ss in task["startstops"]:
            if ss["action"] == "compute":
                w = workers.setdefault(task["worker"], {"tiles": 0, "task_seconds": 0.0,
                                                        "cpu_seconds": None})
                w["tiles"] += 1
                w["task_seconds"] += ss["stop"] - ss["start"]
                spans.append((ss["start"], ss["stop"]))
    span = max(s for _, s in spans) - min(s for s, _ in spans) if spans else 0.0
    busy = sum(s - b for b, s in spans)
    return {"workers": workers, "task_seconds": busy, "span_seconds": span,
            "concurrency": busy / span if span > 0 else 0.0}


def _process_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def shift_diagonal(K, shift: float, n: int, t: int):
    """K + shift I on the first n rows (the padding keeps its identity), diagonal tiles only."""
    import dask.array as da

    if shift == 0:
        return K
    T = K.numblocks[0]
    blocks = [[K.blocks[i, j] for j in range(T)] for i in range(T)]
    for i in range(T):
        m = min(t, n - i * t)
        blocks[i][i] = blocks[i][i].map_blocks(_add_diag, shift, m, dtype=K.dtype)
    return da.block(blocks)


def _add_diag(tile, shift: float, m: int):
    out = tile.copy()
    idx = np.arange(m)
    out[idx, idx] += out.dtype.type(shift)
    return out

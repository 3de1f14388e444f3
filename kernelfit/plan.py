"""The memory planner: from n, d, dtype and the memory at hand, how to build and solve.

It answers before anything large is allocated, so a request that cannot fit
fails in a second with the numbers and the ways out, not after an hour with
the kernel's OOM killer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import psutil

from .errors import PlanError
from .options import Options
from .solvers.cholesky import _CHUNK_ROWS, choose_tile

SOLVERS = ("cholesky", "cg", "cg-matrix-free")


@dataclass(frozen=True)
class Plan:
    """What a fit will allocate and how it will run."""

    n: int
    d: int
    dtype: str
    solver: str
    tile: int
    gram_bytes: int
    work_bytes: int
    limit_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.gram_bytes + self.work_bytes

    def as_dict(self) -> dict:
        return asdict(self)


def available_memory() -> int:
    """Bytes the OS says can be allocated now without swapping."""
    return int(psutil.virtual_memory().available)


def _gb(b: float) -> str:
    return f"{b / 1e9:.1f} GB"


def plan_fit(n: int, d: int, n_outputs: int = 1, *, solver: str = "cholesky",
             options: Options | None = None, gram_allocated: bool = False) -> Plan:
    """Plan a fit of n points in d dimensions; raise :class:`PlanError` if it cannot fit.

    The estimate counts K (n^2 elements unless matrix-free), the data in the
    working dtype, the float64 right-hand sides and solutions, and the
    solver's temporaries (a few tiles, the Gram builder's per-thread panels,
    the float64 upcast chunks of residual products). ``gram_allocated``: K
    exists already and is factored in place (``d`` is then 0: no data).
    """
    opts = options or Options()
    if solver not in SOLVERS:
        raise PlanError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    dtype = np.dtype(opts.resolve_dtype(n))
    item = dtype.itemsize
    tile = choose_tile(n, opts.tile_size)
    # A K that is already allocated (precomputed, factored in place) is not
    # counted: the memory available now has already paid for it.
    gram = 0 if solver == "cg-matrix-free" or gram_allocated else n * n * item
    vectors = 8 * n * max(n_outputs, 1) * 6            # Y, alpha, residuals, CG blocks
    data = n * d * (item + 8)
    chunk_rows = min(_CHUNK_ROWS, n)
    tiled = tile * (max(chunk_rows, tile) + 2 * tile) * item if tile < n else 0
    temps = max(tiled,                                  # Cholesky: diag tile + GEMM buffer
                512 * n * 8 * 2,                        # float64 upcast chunks
                opts.n_jobs * opts.block_size * d * item)
    if solver != "cholesky":
        temps += 8 * n * 500                           # Nyström sketch (rank <= 500)
    work = vectors + data + temps
    limit = opts.memory_limit or int(0.9 * available_memory())
    plan = Plan(n=n, d=d, dtype=dtype.name, solver=solver, tile=tile,
                gram_bytes=gram, work_bytes=work, limit_bytes=limit)
    if plan.total_bytes > limit:
        ways = []
        if item == 8 and n * n * 4 + work <= limit:
            ways.append("dtype='float32' (halves K; refine_steps recovers float64 residuals)")
        if solver != "cg-matrix-free":
            ways.append("solver='cg-matrix-free' (K is never stored; kernel blocks are "
                        "recomputed every iteration)")
        fit_n = int(np.sqrt(max(limit - work, 0) / item))
        ways.append(f"fewer training points (about {fit_n:,} fit with this dtype)" if fit_n
                    else "fewer training points, or free memory held by other processes")
        raise PlanError(
            f"a {solver} fit of n={n:,} in {plan.dtype} needs about {_gb(plan.total_bytes)} "
            f"(K: {_gb(gram)}), but only {_gb(limit)} is available. Try: " + "; ".join(ways) + ".")
    return plan

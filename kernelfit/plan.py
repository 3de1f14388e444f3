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
from .solvers.pinv import PINV_MAX_N, pinv_bytes

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
    extra_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.gram_bytes + self.work_bytes + self.extra_bytes

    def as_dict(self) -> dict:
        return asdict(self)


def available_memory() -> int:
    """Bytes the OS says can be allocated now without swapping."""
    return int(psutil.virtual_memory().available)


def human_bytes(b: float) -> str:
    """A byte count in the unit that shows it (never "0.0 GB" for 40 MB)."""
    b = float(b)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(b) >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b:.0f} B"


def plan_fit(n: int, d: int, n_outputs: int = 1, *, solver: str = "cholesky",
             options: Options | None = None, gram_allocated: bool = False,
             extra_bytes: int = 0) -> Plan:
    """Plan a fit of n points in d dimensions; raise :class:`PlanError` if it cannot fit.

    The estimate counts K (n^2 elements unless matrix-free), the data in the
    working dtype, the float64 right-hand sides and solutions, and the
    solver's temporaries (a few tiles, the Gram builder's per-thread panels,
    the float64 upcast chunks of residual products). ``gram_allocated``: K
    exists already and is factored in place (``d`` is then 0: no data).
    ``extra_bytes``: what the caller allocates besides (a streamed path's
    K_test and feature chunks, ...), counted into the total so that the whole
    request is refused before any of it is allocated.
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
    extra = int(extra_bytes)
    if extra < 0:
        raise PlanError(f"extra_bytes must be >= 0, got {extra_bytes!r}")
    plan = Plan(n=n, d=d, dtype=dtype.name, solver=solver, tile=tile,
                gram_bytes=gram, work_bytes=work, limit_bytes=limit, extra_bytes=extra)
    if plan.total_bytes > limit:
        ways = []
        if item == 8 and (gram // 2 if gram else 0) + work + extra <= limit:
            ways.append("--dtype float32 / dtype='float32' (halves K; --refine-steps / "
                        "refine_steps recovers float64 residuals)")
        # Matrix-free CG recomputes K from the points: no way out for a K that
        # was handed over precomputed (d == 0) or already sits in memory.
        if solver != "cg-matrix-free" and d > 0 and not gram_allocated:
            ways.append("--solver cg-matrix-free / solver='cg-matrix-free' (K is never "
                        "stored; kernel blocks are recomputed every iteration)")
        fit_n = int(np.sqrt(max(limit - work - extra, 0) / item)) if gram else 0
        ways.append(f"fewer training points (about {fit_n:,} fit with this dtype)" if fit_n
                    else "fewer training points, or free memory held by other processes")
        parts = [f"K: {human_bytes(gram)}"] if gram else []
        parts.append(f"working memory: {human_bytes(work)}")
        if extra:
            parts.append(f"other allocations of the run: {human_bytes(extra)}")
        raise PlanError(
            f"a {solver} fit of n={n:,} in {plan.dtype} needs about "
            f"{human_bytes(plan.total_bytes)} ({', '.join(parts)}), but only "
            f"{human_bytes(limit)} is available. Try: " + "; ".join(ways) + ".")
    return plan


def plan_pinv(n: int, options: Options | None = None, *, in_use: int = 0) -> int:
    """Check that the rank-revealing solve K^+ Y of n points fits; return its bytes.

    It runs when K already sits in memory (and failed to factor), so it is
    planned against what is available now (and ``memory_limit`` less
    ``in_use``, the bytes of that K). Refused when n is above
    :data:`kernelfit.solvers.pinv.PINV_MAX_N` (the eigendecomposition's ~9 n^3
    flops take too long) or its two float64 n x n arrays do not fit.
    """
    opts = options or Options()
    need = pinv_bytes(n)
    if n > PINV_MAX_N:
        raise PlanError(f"the minimum-norm solve K^+ y of n={n:,} needs an eigendecomposition "
                        f"of ~{9 * n**3 / 1e12:.0f} TFLOP and {human_bytes(need)}; it is done "
                        f"for n <= {PINV_MAX_N:,} only. Pass lam > 0 or jitter='auto', or "
                        "fewer points.")
    # in_use: what the fit holds already (K): counted against memory_limit, while
    # the available memory has paid for it.
    limit = int(0.9 * available_memory())
    if opts.memory_limit is not None:
        limit = min(limit, opts.memory_limit - int(in_use))
    if need > limit:
        raise PlanError(f"the minimum-norm solve K^+ y of n={n:,} needs {human_bytes(need)} "
                        f"(two float64 n x n arrays) besides K, but only {human_bytes(limit)} "
                        "is available. Pass lam > 0 or jitter='auto', or free memory.")
    return need

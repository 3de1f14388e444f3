"""The memory planner: from n, d, dtype, the backend and the memory at hand, how to build and solve.

It answers before anything large is allocated, so a request that cannot fit
fails in a second with the numbers and the ways out, not after an hour with
the kernel's OOM killer. Its :class:`Plan` is resolved once per fit and
carries every size the engine uses (dtype, tile, where K lives); the size
constants below are the only ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import psutil

from .errors import PlanError
from .formats import human_bytes
from .options import Options
from .solvers.pinv import PINV_MAX_N, pinv_bytes

SOLVERS = ("cholesky", "cg", "cg-matrix-free", "pcg")

# -- the engine's sizes -------------------------------------------------------------
#: Tile width for a host K too large for one LAPACK call (n^2 >= 2**31): 6,144-wide
#: tiles kept a 60,000 x 60,000 float32 factorization at ~86% of GEMM on 2 cores.
LARGE_TILE = 6144
#: Tile of a K factored in device memory. Measured on an H200 (benchmarks/results/gpu,
#: n = 60,000 float32): 6,144 -> 41.0 TFLOP/s, 8,192 -> 40.1, 12,288 -> 38.2,
#: 16,384 -> 37.3 (wider tiles leave more of the work in the slower potrf / trsm).
DEVICE_TILE = 6144
#: Rows and columns of a device tile of the streamed Gram (K += Phi_c Phi_c^T): a GPU
#: GEMM needs large tiles to run near its peak (8192 x 8192 x 2,048 is 275 GFLOP,
#: milliseconds on an H100), and cuBLAS accumulates into the view itself.
DEVICE_STREAM_TILE = 8192
#: Rows per Gram panel in device memory (host panels: Options.block_size): one
#: GEMM and six element-wise passes per panel, few enough launches to vanish.
DEVICE_PANEL_ROWS = 4096
#: Rows per float64 chunk of the stored-K product: in cache on the host (measured at
#: n = 10,000: 256 rows 0.29 s, 512 0.36 s, 2,048 0.89 s); large on a device.
STORED_PRODUCT_ROWS = {"host": 256, "device": 4096}
#: Panel width of the triangular solves on the host: each diagonal tile's solve is
#: one LAPACK call on a small (16 MB) tile, whatever the factor's tile was.
SOLVE_TILE = 2048
#: Row chunk of the host GEMM updates and panel solves: bounds the temporaries
#: (chunk x tile elements) and keeps each GEMM large enough to run near peak.
CHUNK_ROWS = 8192
#: The same on a device, where a chunk's temporary (16,384 x tile) is cheap and
#: fewer, larger calls keep the GPU busy.
DEVICE_CHUNK_ROWS = 16384
#: Rows per block of the matrix-free residual when K is streamed from host tiles
#: (no copy of K is kept): bounds its float64 temporary to 1,024 x n.
STREAMED_RESIDUAL_ROWS = 1024
#: Share of the device's free memory a resident K may take: the rest is cuBLAS and
#: cuSOLVER workspace, the panel temporaries and the data.
DEVICE_HEADROOM = 0.92

#: Largest K factored by one LAPACK call. OpenBLAS's threaded dpotrf on this kind of
#: machine segfaulted on one in-place call over a 16,000 x 16,000 float64 matrix
#: (2.0 GB; 12,000, 1.2 GB, ran; a random SPD matrix, plain SciPy, 2 threads), so
#: above 1 GiB the factor goes tile by tile, each potrf on a 6,144-wide tile.
SINGLE_CALL_BYTES = 2**30


def device_tile(n: int, opts: Options) -> int:
    """The tile width to factor an n x n K in device memory with."""
    return min(n, opts.tile_size or DEVICE_TILE)


def max_tile(n: int) -> int:
    """Largest tile width whose calls stay below 2**31 elements (LP64 LAPACK)."""
    return max(1, min(n, (2**31 - 1) // max(n, CHUNK_ROWS)))


def choose_tile(n: int, tile_size: int | None = None, itemsize: int = 8) -> int:
    """The tile width to factor an n x n K in host memory with.

    ``None`` (auto): the whole matrix in one in-place LAPACK call while it holds
    at most :data:`SINGLE_CALL_BYTES` (LAPACK's own blocked potrf is the fastest
    route there: 93% of GEMM at n = 10,000 float32), else :data:`LARGE_TILE`.
    A given width is clipped to what keeps every call below 2**31 elements.
    """
    if tile_size is None:
        tile_size = n if n * n * itemsize <= SINGLE_CALL_BYTES else LARGE_TILE
    return int(max(1, min(tile_size, max_tile(n))))


@dataclass(frozen=True)
class Plan:
    """What a fit will allocate and how it will run.

    ``storage``: "host" (K in host memory, NumPy), "device" (K in place in the
    device's memory), or "host tiles" (K larger than the device: lower tiles in
    pinned host memory, streamed through the device by the tiled Cholesky).
    """

    n: int
    d: int
    dtype: str
    solver: str
    tile: int
    gram_bytes: int
    work_bytes: int
    limit_bytes: int
    extra_bytes: int = 0
    backend: str = "numpy"
    device: str = "cpu"
    storage: str = "host"
    device_bytes: int = 0          # what the device must hold (0 on the host)
    device_limit_bytes: int = 0
    disk_bytes: int = 0            # K's tiles on disk ("disk tiles")
    scratch_dir: str = ""

    @property
    def total_bytes(self) -> int:
        return self.gram_bytes + self.work_bytes + self.extra_bytes

    def as_dict(self) -> dict:
        return asdict(self)


def available_memory() -> int:
    """Bytes the OS says can be allocated now without swapping."""
    return int(psutil.virtual_memory().available)


def plan_fit(n: int, d: int, n_outputs: int = 1, *, solver: str = "cholesky",
             options: Options | None = None, gram_allocated: bool = False,
             extra_bytes: int = 0, backend=None) -> Plan:
    """Plan a fit of n points in d dimensions; raise :class:`PlanError` if it cannot fit.

    The estimate counts K (n^2 elements unless matrix-free), the data in the
    working dtype, the float64 right-hand sides and solutions, and the
    solver's temporaries (a few tiles, the Gram builder's per-thread panels,
    the float64 upcast chunks of residual products). ``gram_allocated``: K
    exists already and is factored in place (``d`` is then 0: no data).
    ``extra_bytes``: what the caller allocates besides (a streamed path's
    K_test and feature chunks, ...), counted into the total so that the whole
    request is refused before any of it is allocated.

    ``backend``: a :class:`kernelfit.backend.Backend` on a GPU plans where K
    lives there (:func:`_plan_device`); None or a host backend plans host memory.
    """
    opts = options or Options()
    if backend is not None and backend.on_gpu and not gram_allocated:
        return _plan_device(n, d, n_outputs, solver, opts, backend, int(extra_bytes))
    if solver not in SOLVERS:
        raise PlanError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    dtype = np.dtype(opts.resolve_dtype(n))
    item = dtype.itemsize
    tile = choose_tile(n, opts.tile_size, item)
    # A K that is already allocated (precomputed, factored in place) is not
    # counted: the memory available now has already paid for it.
    gram = 0 if solver == "cg-matrix-free" or gram_allocated else n * n * item
    vectors = 8 * n * max(n_outputs, 1) * 6            # Y, alpha, residuals, CG blocks
    data = n * d * (item + 8)
    chunk_rows = min(CHUNK_ROWS, n)
    tiled = tile * (max(chunk_rows, tile) + 2 * tile) * item if tile < n else 0
    temps = max(tiled,                                  # Cholesky: diag tile + GEMM buffer
                512 * n * 8 * 2,                        # float64 upcast chunks
                opts.n_jobs * opts.block_size * d * item)
    if opts.refines_exactly(solver, has_points=d > 0):
        # float64 residual blocks of K recomputed from the points, after the factor
        temps = max(temps, 2 * residual_rows(n) * n * 8)
    if solver in ("cg", "cg-matrix-free", "pcg"):     # eigen sketch (+ pcg's validation rows)
        from .solvers.pcg import pcg_bytes, sketch_budget
        k_item = 0 if solver == "cg-matrix-free" else item      # as solve._cg sizes it
        temps += pcg_bytes(n, opts if solver == "pcg" else replace(opts, val_fraction=0.0),
                           sketch_budget(n, k_item, opts, gram_allocated=gram_allocated))
    work = vectors + data + temps
    limit = opts.memory_limit or int(0.9 * available_memory())
    extra = int(extra_bytes)
    if extra < 0:
        raise PlanError(f"extra_bytes must be >= 0, got {extra_bytes!r}")
    plan = Plan(n=n, d=d, dtype=dtype.name, solver=solver, tile=tile,
                gram_bytes=gram, work_bytes=work, limit_bytes=limit, extra_bytes=extra,
                backend=backend.name if backend is not None else "numpy",
                device=backend.device_name if backend is not None else "cpu")
    wants_disk = opts.storage == "disk" or (opts.storage == "auto"
                                            and plan.total_bytes > limit)
    if wants_disk and solver == "cholesky" and d > 0 and not gram_allocated:
        disk = _plan_disk(plan, n, d, n_outputs, opts, item)
        if disk is not None or opts.storage == "disk":
            return disk or _refuse_disk(plan, opts, item)
    if plan.total_bytes > limit:
        ways = []
        if item == 8 and (gram // 2 if gram else 0) + work + extra <= limit:
            ways.append("--dtype float32 / dtype='float32' (halves K; --refine-steps 2 "
                        "--refine-against exact recovers the float64 solution)")
        # Matrix-free CG recomputes K from the points: no way out for a K that
        # was handed over precomputed (d == 0) or already sits in memory.
        if solver == "cholesky" and d > 0 and not gram_allocated and opts.storage == "memory":
            ways.append("--storage disk / storage='disk' (K's lower tiles on disk, factored "
                        "out of core)")
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


def scratch_dir(opts: Options):
    """Where K's tile files go: ``Options.scratch_dir``, else ``scratch`` in the cache root."""
    from pathlib import Path

    from .data.cache import data_home
    return Path(opts.scratch_dir).expanduser() if opts.scratch_dir else data_home() / "scratch"


def _plan_disk(plan: Plan, n: int, d: int, n_outputs: int, opts: Options, item: int):
    """K's lower tiles on disk, three panels of them in RAM; None if RAM or disk is short."""
    import shutil
    vectors = 8 * n * max(n_outputs, 1) * 6
    fixed = vectors + n * d * (item + 8) + plan.extra_bytes + residual_rows(n) * n * (8 + item)
    tile = streamed_tile(n, item, plan.limit_bytes - fixed)
    if not tile:
        return None
    tile = min(tile, opts.tile_size or tile)
    nt = -(-n // tile)
    disk = nt * (nt + 1) // 2 * tile * tile * item
    folder = scratch_dir(opts)
    probe = next((p for p in [folder, *folder.parents] if p.exists()), folder)
    if disk > shutil.disk_usage(probe).free:
        return None
    return replace(plan, storage="disk tiles", tile=tile, gram_bytes=0,
                   work_bytes=streamed_device_bytes(n, tile, item) + fixed - plan.extra_bytes,
                   disk_bytes=disk, scratch_dir=str(folder))


def _refuse_disk(plan: Plan, opts: Options, item: int):
    raise PlanError(f"--storage disk / storage='disk' for n={plan.n:,} needs three panels in "
                    f"RAM (about {human_bytes(streamed_device_bytes(plan.n, 256, item))} at "
                    f"the narrowest tile) besides the data, and room for K's lower tiles "
                    f"(about {human_bytes(plan.n * plan.n * item / 2)}) under "
                    f"{scratch_dir(opts)}; one of them is short. Free memory or disk, or "
                    "use fewer training points.")


def device_limit(backend, opts: Options) -> int:
    """Bytes a run may take on ``backend``'s device: free memory, capped by the options."""
    limit = backend.free_memory()
    for cap in (opts.device_memory, opts.memory_limit):
        if cap is not None:
            limit = min(limit, int(cap))
    return int(limit)


def _plan_device(n: int, d: int, n_outputs: int, solver: str, opts: Options, backend,
                 extra: int) -> Plan:
    """K on a GPU: in place in device memory, else lower tiles streamed from host memory."""
    if solver != "cholesky":
        raise PlanError(f"backend={backend.name!r} on a GPU solves with solver='cholesky'; "
                        f"--solver {solver} runs with --backend numpy")
    dtype = np.dtype(opts.resolve_dtype(n))
    item = dtype.itemsize
    gram = n * n * item
    vectors = 8 * n * max(n_outputs, 1) * 6
    data = n * d * item + 8 * n
    tile = device_tile(n, opts)
    # potrf / trsm temporaries of a tile, the float64 residual chunk, a Gram panel
    temps = max(3 * tile * tile * item, 16384 * tile * item, 4096 * n * 8,
                opts.block_size * n * item)
    work = vectors + data + temps
    dev_limit = device_limit(backend, opts)
    host_limit = opts.memory_limit or int(0.9 * available_memory())
    common = dict(n=n, d=d, dtype=dtype.name, solver=solver, work_bytes=work,
                  extra_bytes=extra, backend=backend.name, device=backend.device_name,
                  device_limit_bytes=dev_limit)
    if gram + work + extra <= DEVICE_HEADROOM * dev_limit:
        return Plan(tile=tile, gram_bytes=gram, limit_bytes=host_limit, storage="device",
                    device_bytes=gram + work + extra, **common)
    # Past device memory: three panels of npad x tile on the device (the one being
    # factored and two left panels, double-buffered), K's lower tiles on the host.
    fixed = vectors + data + extra + residual_rows(n) * n * (8 + item)
    tile = streamed_tile(n, item, int(DEVICE_HEADROOM * dev_limit) - fixed)
    if backend.name == "torch" and tile:
        nt = -(-n // tile)
        host = nt * (nt + 1) // 2 * tile * tile * item
        if host + data <= host_limit:
            return Plan(tile=tile, gram_bytes=host, limit_bytes=host_limit,
                        storage="host tiles", device_bytes=streamed_device_bytes(
                            n, tile, item) + fixed, **{**common, "work_bytes": fixed})
    ways = ["--dtype float32 / dtype='float32' (halves K)"] if item == 8 else []
    ways += ["--backend numpy (K in host memory)", "fewer training points"]
    raise PlanError(
        f"a cholesky fit of n={n:,} in {dtype.name} needs {human_bytes(gram)} for K, but "
        f"{backend.describe()} has {human_bytes(dev_limit)} available"
        + ("" if backend.name == "torch" else
           " (streaming K from host memory runs on --backend torch)")
        + (f" and host memory ({human_bytes(host_limit)}) cannot hold its tiles either"
           if backend.name == "torch" and tile else "")
        + ". Try: " + "; ".join(ways) + ".")


def streamed_device_bytes(n: int, tile: int, item: int) -> int:
    """Bytes of the streamed factor: three n x tile panels and a tile's temporaries."""
    npad = -(-n // tile) * tile
    return (3 * npad * tile + 3 * tile * tile + min(DEVICE_CHUNK_ROWS, npad) * tile) * item


def residual_rows(n: int) -> int:
    """Rows per block of the matrix-free residual of a streamed K (its temporary: rows x n)."""
    return max(64, min(STREAMED_RESIDUAL_ROWS, n // 8))


def streamed_tile(n: int, item: int, budget: int) -> int:
    """The widest tile (a multiple of 256, at most 16,384) whose panels fit ``budget`` bytes.

    The tile is then evened out over the panels (n = 100,000 and 12,288 at most
    gives 9 panels of 11,264, not 8 full ones and a sliver), which keeps the
    zero padding of the last tiles small.
    """
    widest = 16384
    while widest >= 256 and streamed_device_bytes(n, widest, item) > budget:
        widest -= 256
    if widest < 256:
        return 0
    nt = -(-n // widest)
    even = -(-n // nt)                    # ceil(n / nt), then up to a multiple of 256
    tile = -(-even // 256) * 256
    return int(tile if streamed_device_bytes(n, tile, item) <= budget else widest)


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

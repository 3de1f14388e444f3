"""The planner: what the user asked for, and the data's shape, resolved into one frozen Plan.

:func:`plan_fit` runs once per fit, before anything large is allocated: it
resolves every "auto" of :class:`~kernelfit.options.Options` (dtype, backend
and device knowing the solver, where K lives, the tile, the refinement's
reference) and counts every allocation, so a request that cannot fit fails
in a second with the numbers and the ways out, not after an hour with the
kernel's OOM killer. Everything below it (the Gram builders, the storage,
the solvers) takes the Plan, or ``Plan.options`` with nothing left to
resolve; the record of a run reports the Plan that ran, and ``kernelfit
plan`` prints the same object. The sizes themselves live in
:mod:`kernelfit.engine.sizes`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from kernelfit.engine.backend import get_backend, resolve_backend
from kernelfit.engine.sizes import (
    CHUNK_ROWS,
    DEVICE_CHUNK_ROWS,
    DEVICE_HEADROOM,
    STORED_PRODUCT_ROWS,
    blas_workspace,
    device_tile,
    gram_rows,
    host_limit,
    host_tile,
    predict_rows,
    residual_rows,
    streamed_panel_bytes,
    streamed_tile,
    working_dtype,
)
from kernelfit.errors import InputError, PlanError
from kernelfit.formats import human_bytes
from kernelfit.options import Options

SOLVERS = ("cholesky", "cg", "cg-matrix-free", "pcg")


@dataclass(frozen=True)
class Plan:
    """What a fit will allocate and how it will run: every setting resolved.

    ``storage``: "host" (K in host memory, NumPy), "disk tiles" (K's lower
    tiles in a file, factored out of core), "device" (K in place in the
    device's memory), "host tiles" (K larger than the device: lower tiles in
    pinned host memory, streamed through the device by the tiled Cholesky),
    "none" (matrix-free: K is never stored) or "dask" (on the cluster's
    workers). ``options`` is the caller's :class:`Options` with every "auto"
    resolved (dtype, backend, device, refine_against, tile_size): what the
    engine below reads.
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
    n_outputs: int = 1
    precomputed: bool = False      # K handed over (kernel="precomputed", or streamed)
    streamed: bool = False         # K accumulated from the front end's column chunks
    refine_against: str = "stored"
    gram_rows: int = 0             # rows per Gram panel
    predict_rows: int = 0          # rows per block of k(test, train) at prediction
    notes: tuple = ()
    options: Options = field(default_factory=Options)

    @property
    def total_bytes(self) -> int:
        return self.gram_bytes + self.work_bytes + self.extra_bytes

    def as_dict(self) -> dict:
        out = asdict(self)
        out["notes"] = list(self.notes)
        out["total_bytes"] = self.total_bytes
        return out


def refine_reference(opts: Options, solver: str, *, has_points: bool) -> str:
    """What refinement measures against: "exact" (K recomputed in float64) or "stored".

    "exact" needs the points, solver="cholesky" and no scheduler; asked for
    anywhere else it is an :class:`InputError`. "auto" is "exact" wherever
    that holds and ``refine_steps`` > 0.
    """
    possible = has_points and solver == "cholesky" and opts.scheduler is None
    if opts.refine_against == "exact" and not possible:
        raise InputError("refine_against='exact' recomputes K in float64 from the points "
                         "to refine a Cholesky solve on this machine: it needs the points "
                         "(not a precomputed K), solver='cholesky' and no scheduler; use "
                         "refine_against='stored' otherwise")
    exact = opts.refine_against == "exact" or (opts.refine_against == "auto"
                                               and bool(opts.refine_steps) and possible)
    return "exact" if exact else "stored"


def _backend(opts: Options, solver: str, precomputed: bool):
    """The backend of the fit, knowing the solver; and a notice for the record, if any.

    A precomputed K is a host array and a Dask solve runs on the workers: both
    are NumPy. "auto" takes a GPU for the exact solve only (the CG solvers run
    on the host, :func:`kernelfit.engine.backend.resolve_backend`).
    """
    if opts.scheduler is not None:
        if opts.backend not in ("numpy", "auto"):
            raise InputError("a Dask solve (scheduler=...) runs on the cluster's workers "
                             "with NumPy; drop --backend torch/cupy or the scheduler")
        return get_backend("numpy"), ()
    if precomputed:
        return get_backend("numpy"), ()
    be = resolve_backend(opts, solver)
    notes = ()
    if opts.backend == "torch" and opts.device is None and not be.on_gpu:
        notes = ("--backend torch: PyTorch sees no CUDA device, so K is built and factored "
                 "on the CPU with PyTorch (same engine as --backend numpy, usually slower)",)
    return be, notes


def plan_fit(n: int, d: int, n_outputs: int = 1, *, solver: str = "cholesky",
             options: Options | None = None, precomputed: bool = False,
             gram_allocated: bool = False, streamed: bool = False,
             extra_bytes: int = 0, backend=None) -> Plan:
    """Resolve and plan a fit of n points in d dimensions; raise PlanError if it cannot fit.

    The estimate counts K (n^2 elements unless matrix-free), the data in the
    working dtype, the float64 right-hand sides and solutions, and the
    solver's temporaries (a few tiles, the Gram builder's per-thread panels,
    the float64 upcast chunks of residual products).

    Parameters
    ----------
    n, d, n_outputs : int
        Training points, their dimension (0 for a precomputed K), columns of Y.
    solver : str
    options : Options
        What the user asked for; its "auto"s are resolved into ``Plan.options``.
    precomputed : bool
        K is handed over as an array (kernel="precomputed", or streamed from
        feature chunks): solved on the host, no points to recompute it from.
    gram_allocated : bool
        K exists already and is factored in place: not counted (the memory
        available now has already paid for it).
    streamed : bool
        K comes from the front end's column chunks (recorded in the Plan).
    extra_bytes : int
        What the caller allocates besides (a run's k(test, train), feature
        matrices or chunks, prediction blocks), counted into the total so that
        the whole request is refused before any of it is allocated.
    backend : Backend, optional
        An already-resolved backend (benchmarks, tests with a stub device);
        default: resolved from ``options`` knowing the solver.
    """
    opts = options or Options()
    if solver not in SOLVERS:
        raise PlanError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    extra = int(extra_bytes)
    if extra < 0:
        raise PlanError(f"extra_bytes must be >= 0, got {extra_bytes!r}")
    if precomputed and solver == "cg-matrix-free":
        raise InputError("solver='cg-matrix-free' needs the points, not a precomputed K; "
                         "use 'cholesky' or 'cg'")
    dtype = working_dtype(opts.dtype, n)
    refine = refine_reference(opts, solver, has_points=not precomputed and d > 0)
    be, notes = (backend, ()) if backend is not None else _backend(opts, solver, precomputed)
    # K on a remote cluster's workers is planned there (kernelfit.distributed); this host
    # holds the points, the solution and the caller's extras.
    remote = opts.scheduler not in (None, "local")
    if be.on_gpu and not gram_allocated and not precomputed:
        # K and its work on the device; the caller's extras (features, blocks of
        # k(test, train)) stay in host memory, which holds nothing else large then.
        plan = _plan_device(n, d, n_outputs, solver, opts.replace(dtype=dtype), be, 0)
    else:
        plan = _plan_host(n, d, n_outputs, solver, opts.replace(dtype=dtype), be, extra,
                          gram_allocated=gram_allocated or remote, refine=refine)
    storage = ("dask" if opts.scheduler is not None
               else "none" if solver == "cg-matrix-free" else plan.storage)
    tile_size = plan.tile if storage not in ("dask", "none") else opts.tile_size
    resolved = opts.replace(dtype=dtype, backend=be.name, device=be.device_name,
                            refine_against=refine, tile_size=tile_size,
                            storage="disk" if storage == "disk tiles" else
                            "memory" if opts.storage == "auto" else opts.storage)
    return replace(plan, storage=storage, n_outputs=max(int(n_outputs), 1),
                   precomputed=precomputed, streamed=streamed, refine_against=refine,
                   gram_rows=gram_rows(opts.block_size, on_device=be.on_gpu),
                   predict_rows=predict_rows(n), notes=notes, options=resolved)


def _vectors(n: int, n_outputs: int) -> int:
    """Y, alpha, residuals and CG blocks: float64, n x n_outputs each."""
    return 8 * n * max(n_outputs, 1) * 6


def _plan_host(n: int, d: int, n_outputs: int, solver: str, opts: Options, be, extra: int,
               *, gram_allocated: bool, refine: str) -> Plan:
    """K in host memory: one in-place buffer, or its lower tiles on disk."""
    dtype = np.dtype(opts.dtype)
    item = dtype.itemsize
    tile = host_tile(n, opts.tile_size, item)
    gram = 0 if solver == "cg-matrix-free" or gram_allocated else n * n * item
    vectors = _vectors(n, n_outputs)
    data = n * d * (item + 8)
    chunk_rows = min(CHUNK_ROWS, n)
    tiled = tile * (max(chunk_rows, tile) + 2 * tile) * item if tile < n else 0
    temps = max(tiled,                                  # Cholesky: diag tile + GEMM buffer
                # float64 upcast chunks of the stored product and their results
                4 * STORED_PRODUCT_ROWS["host"] * n * 8,
                opts.n_jobs * opts.block_size * d * item)
    if refine == "exact":
        # float64 residual blocks of K recomputed from the points, after the factor
        temps = max(temps, 2 * residual_rows(n) * n * 8)
    if solver in ("cg", "cg-matrix-free", "pcg"):     # eigen sketch (+ pcg's validation rows)
        from kernelfit.engine.solvers.pcg import pcg_bytes, sketch_budget
        k_item = 0 if solver == "cg-matrix-free" else item      # as solve._cg sizes it
        temps += pcg_bytes(n, opts if solver == "pcg" else replace(opts, val_fraction=0.0),
                           sketch_budget(n, k_item, opts, gram_allocated=gram_allocated))
    work = vectors + data + temps + blas_workspace(n)
    limit = host_limit(opts.memory_limit)
    plan = Plan(n=n, d=d, dtype=dtype.name, solver=solver, tile=tile,
                gram_bytes=gram, work_bytes=work, limit_bytes=limit, extra_bytes=extra,
                backend=be.name, device=be.device_name)
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
    """Where K's tile files go: ``Options.scratch_dir``, else ``scratch`` in the cache root.

    Checked here, before any work: a folder that exists or can be created (not a
    file, not under ``/proc``), else :class:`~kernelfit.errors.InputError`.
    """
    from kernelfit.home import SCRATCH, data_home
    from kernelfit.params import folder
    if not opts.scratch_dir:
        return folder("the scratch folder", data_home() / SCRATCH,
                      example="--scratch ~/kernelfit-scratch")
    return folder("--scratch / Options.scratch_dir", opts.scratch_dir,
                  example="~/kernelfit-scratch (a disk with room for K's tiles)")


def _plan_disk(plan: Plan, n: int, d: int, n_outputs: int, opts: Options, item: int):
    """K's lower tiles on disk, three panels of them in RAM; None if RAM or disk is short."""
    import shutil
    vectors = _vectors(n, n_outputs)
    fixed = (vectors + n * d * (item + 8) + plan.extra_bytes + residual_rows(n) * n * (8 + item)
             + blas_workspace(n))
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
                   work_bytes=streamed_panel_bytes(n, tile, item) + fixed - plan.extra_bytes,
                   disk_bytes=disk, scratch_dir=str(folder))


def _refuse_disk(plan: Plan, opts: Options, item: int):
    raise PlanError(f"--storage disk / storage='disk' for n={plan.n:,} needs three panels in "
                    f"RAM (about {human_bytes(streamed_panel_bytes(plan.n, 256, item))} at "
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
    dtype = np.dtype(opts.dtype)
    item = dtype.itemsize
    gram = n * n * item
    vectors = _vectors(n, n_outputs)
    data = n * d * item + 8 * n
    tile = device_tile(n, opts.tile_size)
    # potrf / trsm temporaries of a tile, the float64 residual chunk, a Gram panel
    temps = max(3 * tile * tile * item, DEVICE_CHUNK_ROWS * tile * item,
                STORED_PRODUCT_ROWS["device"] * n * 8, opts.block_size * n * item)
    work = vectors + data + temps
    dev_limit = device_limit(backend, opts)
    host = host_limit(opts.memory_limit)
    common = dict(n=n, d=d, dtype=dtype.name, solver=solver, work_bytes=work,
                  extra_bytes=extra, backend=backend.name, device=backend.device_name,
                  device_limit_bytes=dev_limit)
    if gram + work + extra <= DEVICE_HEADROOM * dev_limit:
        return Plan(tile=tile, gram_bytes=gram, limit_bytes=host, storage="device",
                    device_bytes=gram + work + extra, **common)
    # Past device memory: three panels of npad x tile on the device (the one being
    # factored and two left panels, double-buffered), K's lower tiles on the host.
    fixed = vectors + data + extra + residual_rows(n) * n * (8 + item)
    tile = streamed_tile(n, item, int(DEVICE_HEADROOM * dev_limit) - fixed)
    if backend.name == "torch" and tile:
        nt = -(-n // tile)
        tiles = nt * (nt + 1) // 2 * tile * tile * item
        if tiles + data <= host:
            return Plan(tile=tile, gram_bytes=tiles, limit_bytes=host,
                        storage="host tiles", device_bytes=streamed_panel_bytes(
                            n, tile, item) + fixed, **{**common, "work_bytes": fixed})
    ways = ["--dtype float32 / dtype='float32' (halves K)"] if item == 8 else []
    ways += ["--backend numpy (K in host memory)", "fewer training points"]
    raise PlanError(
        f"a cholesky fit of n={n:,} in {dtype.name} needs {human_bytes(gram)} for K, but "
        f"{backend.describe()} has {human_bytes(dev_limit)} available"
        + ("" if backend.name == "torch" else
           " (streaming K from host memory runs on --backend torch)")
        + (f" and host memory ({human_bytes(host)}) cannot hold its tiles either"
           if backend.name == "torch" and tile else "")
        + ". Try: " + "; ".join(ways) + ".")

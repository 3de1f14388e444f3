"""Every size the engine uses, and the memory probes: one leaf module.

Tile widths, panel and chunk rows, byte thresholds and memory shares, with
the measurement that chose each. Nothing here imports from kernelfit (a test
checks that no other engine module defines a numeric size constant), so any
layer may read a size without pulling in the planner or the solvers.
"""

from __future__ import annotations

import psutil

# -- the factor ---------------------------------------------------------------------
#: Tile width for a host K too large for one LAPACK call (n^2 >= 2**31): 6,144-wide
#: tiles kept a 60,000 x 60,000 float32 factorization at ~86% of GEMM on 2 cores.
LARGE_TILE = 6144
#: Tile of a K factored in device memory. Measured on an H200 (benchmarks/results/gpu,
#: n = 60,000 float32): 6,144 -> 41.0 TFLOP/s, 8,192 -> 40.1, 12,288 -> 38.2,
#: 16,384 -> 37.3 (wider tiles leave more of the work in the slower potrf / trsm).
DEVICE_TILE = 6144
#: Largest K factored by one LAPACK call. OpenBLAS's threaded dpotrf on this kind of
#: machine segfaulted on one in-place call over a 16,000 x 16,000 float64 matrix
#: (2.0 GB; 12,000, 1.2 GB, ran; a random SPD matrix, plain SciPy, 2 threads), so
#: above 1 GiB the factor goes tile by tile, each potrf on a 6,144-wide tile.
SINGLE_CALL_BYTES = 2**30
#: Elements one LP64 LAPACK/BLAS call may touch (SciPy's LAPACK has 32-bit indices).
LP64_ELEMENTS = 2**31 - 1
#: Panel width of the triangular solves on the host: each diagonal tile's solve is
#: one LAPACK call on a small (16 MB) tile, whatever the factor's tile was.
SOLVE_TILE = 2048
#: Row chunk of the host GEMM updates and panel solves: bounds the temporaries
#: (chunk x tile elements) and keeps each GEMM large enough to run near peak.
CHUNK_ROWS = 8192
#: The same on a device, where a chunk's temporary (16,384 x tile) is cheap and
#: fewer, larger calls keep the GPU busy.
DEVICE_CHUNK_ROWS = 16384
#: Streamed factors (disk tiles, host tiles through a device): tile widths are
#: multiples of this, at most STREAMED_TILE_MAX.
STREAMED_TILE_STEP = 256
STREAMED_TILE_MAX = 16384

# -- the Gram builders --------------------------------------------------------------
#: Rows per Gram panel in device memory (host panels: Options.block_size): one
#: GEMM and six element-wise passes per panel, few enough launches to vanish.
DEVICE_PANEL_ROWS = 4096
#: Rows and columns of a device tile of the streamed Gram (K += Phi_c Phi_c^T): a GPU
#: GEMM needs large tiles to run near its peak (8192 x 8192 x 2,048 is 275 GFLOP,
#: milliseconds on an H100), and cuBLAS accumulates into the view itself.
DEVICE_STREAM_TILE = 8192
#: Columns per host accumulation tile of the streamed Gram: bounds the GEMM
#: temporary to block x 4,096.
STREAM_COL_STEP = 4096
#: Mirror a row panel into the lower triangle in square sub-blocks of this side, so
#: that the transposed (strided) reads stay within cache.
MIRROR_STEP = 512
#: Filters (units) per streamed column chunk of a front end: 256 randconv filters
#: are 2,048 feature columns, 400 MB per chunk at n = 50,000.
STREAM_CHUNK_UNITS = 256
#: A run streams K from its front end's column chunks (when it can) once the train
#: and test feature matrices would take more than this.
STREAM_ABOVE_BYTES = 2 * 2**30
#: Tile of a Gram built on a Dask cluster when Options.tile_size is not given: a
#: 2,048^2 float64 tile is 32 MB, a Cholesky task of ~3 GFLOP, so the scheduler's
#: per-task overhead (~1 ms) is noise, and n = 20,000 gives 10 x 10 tiles: enough
#: tasks to keep every worker of a small cluster busy.
DASK_TILE = 2048

# -- products, residuals, prediction ------------------------------------------------
#: Rows per float64 chunk of the stored-K product: in cache on the host (measured at
#: n = 10,000: 256 rows 0.29 s, 512 0.36 s, 2,048 0.89 s); large on a device.
STORED_PRODUCT_ROWS = {"host": 256, "device": 4096}
#: Rows per block of the matrix-free residual when K is streamed from host tiles
#: (no copy of K is kept): bounds its float64 temporary to 1,024 x n.
STREAMED_RESIDUAL_ROWS = 1024
#: Prediction works on row blocks of k(test, train) of at most this many float64
#: elements (~256 MB), between these row counts.
PREDICT_BLOCK_ELEMENTS = 2**25
PREDICT_ROWS_MIN = 64
PREDICT_ROWS_MAX = 4096
#: Rows per panel of pcg's product: the panel is a view of K (no copy); its rows
#: only size the c-column float32 result, so any panel of a few MB of output is
#: as fast as one call. Panels keep the float64 accumulation of the result
#: bounded and let a memory-mapped K stream.
PCG_PANEL_ROWS = 4096

# -- preconditioners and the minimum-norm path -------------------------------------
#: Largest sketch of the eigen preconditioner: s columns cost n s (float32) + 2 n q
#: (float64) bytes and s^3 + 2 n s q + 4 n q^2 flops, q <= s / 2. At n = 60,000,
#: s = 2,400 that is ~1.5 GB and a few seconds, next to a 14.4 GB K whose single
#: pass takes ~2 s. (s = 4,000 with randomized subspace iteration measured no
#: better on MNIST at n = 60,000 and cost twice the time.)
MAX_SKETCH = 2400
#: Most eigenvectors sought in the sketch. On MNIST (Gaussian, sigma 5) the
#: rounding floor of a float32 K keeps ~740 of them at n = 10,000 and fewer at
#: larger n; seeking more only costs subspace-iteration time.
MAX_RANK = 1200
#: Fewest eigenvectors the cg solvers' preconditioner keeps by default. Measured on
#: digits, n = 400, float64, lam = 0, tol 1e-8: 19 iterations with 300 directions
#: against 95 with the automatic 50; at a very wide bandwidth (1e-4 x the default
#: gamma) a relative residual of 8e-6 after 28 iterations against 9.9 after 300.
CG_MIN_RANK = 300
#: Share of the memory left besides K that the preconditioner's sketch may take
#: (the rest: the CG blocks, prediction, other processes' growth).
SKETCH_SHARE = 0.4
#: Largest n the rank-revealing path (K^+ Y) takes on: eigh with eigenvectors is
#: ~9 n^3 flops, about 90 s at n = 8,000 on 2 cores, and four times the
#: Cholesky's memory in float64.
PINV_MAX_N = 8_000
#: Rows per chunk when copying the stored upper triangle into float64 work arrays.
COPY_ROWS = 1024
#: Elements per chunk of the pass that sums |K| by columns for the condition estimate
#: (float64 temporaries of 16 MB).
NORM_CHUNK_ELEMENTS = 2**21

# -- memory -------------------------------------------------------------------------
#: Largest n for which dtype="auto" stores K in float64 (20,000^2 x 8 B = 3.2 GB).
AUTO_FLOAT64_MAX_N = 20_000
#: What the BLAS / LAPACK library allocates for itself during a host fit, outside the
#: arrays the planner counts (OpenBLAS's per-thread GEMM buffers, potrf's blocking):
#: measured as peak RSS less the traced NumPy peak, 27-73 MB for fits of n = 5,000 to
#: 12,000 on 2 threads (tests/test_memory_plan.py checks the plan's total holds both).
#: It grows with n (potrf's blocking), up to the cap: blas_workspace(n).
BLAS_WORKSPACE = 128 * 2**20
#: Bytes of that workspace per training point, below the cap (8 KiB: 47 MiB at n = 6,000).
BLAS_WORKSPACE_PER_ROW = 8 * 2**10
#: Share of the available RAM a plan may take by default.
HOST_SHARE = 0.9
#: Share of the device's free memory a resident K may take: the rest is cuBLAS and
#: cuSOLVER workspace, the panel temporaries and the data.
DEVICE_HEADROOM = 0.92


def available_memory() -> int:
    """Bytes the OS says can be allocated now without swapping."""
    return int(psutil.virtual_memory().available)


def machine_memory() -> int:
    """Bytes of physical memory this machine has."""
    return int(psutil.virtual_memory().total)


def host_limit(memory_limit: int | None) -> int:
    """Bytes a plan may use on the host: ``memory_limit``, else HOST_SHARE of what is free."""
    return int(memory_limit) if memory_limit else int(HOST_SHARE * available_memory())


# -- size rules (pure functions of the sizes above) ---------------------------------
def working_dtype(dtype: str, n: int) -> str:
    """The dtype K is stored in for n points: "auto" is float64 up to AUTO_FLOAT64_MAX_N."""
    if dtype == "auto":
        return "float64" if n <= AUTO_FLOAT64_MAX_N else "float32"
    return dtype


def gram_rows(block_size: int, *, on_device: bool) -> int:
    """Rows per Gram panel: ``block_size`` on the host, at least DEVICE_PANEL_ROWS on a GPU."""
    return max(int(block_size), DEVICE_PANEL_ROWS) if on_device else int(block_size)


def max_tile(n: int) -> int:
    """Largest tile width whose calls stay below 2**31 elements (LP64 LAPACK)."""
    return max(1, min(n, LP64_ELEMENTS // max(n, CHUNK_ROWS)))


def host_tile(n: int, tile_size: int | None = None, itemsize: int = 8) -> int:
    """The tile width to factor an n x n K in host memory with.

    ``None`` (auto): the whole matrix in one in-place LAPACK call while it holds
    at most :data:`SINGLE_CALL_BYTES` (LAPACK's own blocked potrf is the fastest
    route there: 93% of GEMM at n = 10,000 float32), else :data:`LARGE_TILE`.
    A given width is clipped to what keeps every call below 2**31 elements.
    """
    if tile_size is None:
        tile_size = n if n * n * itemsize <= SINGLE_CALL_BYTES else LARGE_TILE
    return int(max(1, min(tile_size, max_tile(n))))


def device_tile(n: int, tile_size: int | None = None) -> int:
    """The tile width to factor an n x n K in device memory with."""
    return min(n, tile_size or DEVICE_TILE)


def residual_rows(n: int) -> int:
    """Rows per block of a matrix-free residual (its temporary: rows x n float64)."""
    return max(64, min(STREAMED_RESIDUAL_ROWS, n // 8))


def predict_rows(n_train: int, n_test: int | None = None) -> int:
    """Rows per block of k(test, train) at prediction: ~PREDICT_BLOCK_ELEMENTS float64."""
    rows = int(max(PREDICT_ROWS_MIN, min(PREDICT_ROWS_MAX,
                                         PREDICT_BLOCK_ELEMENTS // max(n_train, 1))))
    return rows if n_test is None else max(1, min(rows, n_test))


def streamed_panel_bytes(n: int, tile: int, item: int) -> int:
    """Bytes of a streamed factor's working set: three n x tile panels and a tile's temporaries."""
    npad = -(-n // tile) * tile
    return (3 * npad * tile + 3 * tile * tile + min(DEVICE_CHUNK_ROWS, npad) * tile) * item


def streamed_tile(n: int, item: int, budget: int) -> int:
    """The widest tile (a multiple of 256, at most 16,384) whose panels fit ``budget`` bytes.

    The tile is then evened out over the panels (n = 100,000 and 12,288 at most
    gives 9 panels of 11,264, not 8 full ones and a sliver), which keeps the
    zero padding of the last tiles small. 0 when not even the narrowest fits.
    """
    step = STREAMED_TILE_STEP
    widest = STREAMED_TILE_MAX
    while widest >= step and streamed_panel_bytes(n, widest, item) > budget:
        widest -= step
    if widest < step:
        return 0
    nt = -(-n // widest)
    even = -(-n // nt)                    # ceil(n / nt), then up to a multiple of the step
    tile = -(-even // step) * step
    return int(tile if streamed_panel_bytes(n, tile, item) <= budget else widest)


# -- the benchmark's GEMM peak (kernelfit.engine.backend.device) ---------------------
#: Side of the square GEMM whose rate is the peak. 1024^3 on this 2-core host ran at
#: 41 GFLOP/s in float32 against 65 at 2048^3 (threads not yet saturated), which
#: would inflate every ratio by half; a GPU needs 8192^3 to fill its SMs.
PEAK_SIZE = {"cpu": 2048, "cuda": 8192}
#: Timed repetitions of that GEMM (the best counts).
PEAK_REPS = 3


def blas_workspace(n: int) -> int:
    """What BLAS / LAPACK allocate beside the planned arrays in a host fit of n points."""
    return min(BLAS_WORKSPACE, int(n) * BLAS_WORKSPACE_PER_ROW)

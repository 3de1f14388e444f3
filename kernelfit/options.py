"""The one options object: every tuning knob, with its default beside it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

from kernelfit.errors import InputError
from kernelfit.params import one_of, real, whole

DTYPES = ("auto", "float32", "float64")
STORAGE_CHOICES = ("auto", "memory", "disk")
# Kept in step with kernelfit.engine.backend.BACKEND_CHOICES (imported lazily there).
BACKENDS = ("auto", "numpy", "torch", "cupy")
# Devices a run may name: the CPU, the current CUDA device, or CUDA device N.
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
# A running Dask scheduler: tcp://host:port (host a name, an IPv4 or a bracketed IPv6 address).
_SCHEDULER = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)"
                        r":(\d{1,5})$")
# Preconditioners of the CG solvers (kernelfit.engine.solvers.precond)
PRECONDITIONERS = ("eigen", "jacobi", "none")
REFINE_AGAINST = ("auto", "stored", "exact")
# Most refinement steps a solve may ask for. Each converging step cuts the residual by
# cond(K) eps_float32 (30x-1000x measured), so float64's floor is a few steps away, and
# the refinement stops by itself once a step stops cutting it; more is a typo.
MAX_REFINE_STEPS = 100


def check_backend_device(backend: str, device: str | None) -> None:
    """A device the backend can use: the NumPy backend runs in host memory only."""
    if backend == "numpy" and device not in (None, "cpu"):
        raise InputError(f"backend 'numpy' runs in host memory, and device {device!r} is a GPU: "
                         "use backend 'torch', 'cupy' or 'auto' (--backend), or drop the "
                         "device (--device)")


@dataclass(frozen=True)
class Options:
    """Tuning knobs for building and solving (FALKON-style: one documented place).

    Parameters
    ----------
    dtype : {"auto", "float32", "float64"}
        Storage and factorization precision of K. float32 halves memory (MNIST's
        60,000 x 60,000 K is 14.4 GB in float32, 28.8 GB in float64) and runs
        twice as fast, but an interpolation kernel matrix is ill-conditioned,
        so float64 is the safe choice when it is cheap. "auto" takes float64 up
        to n = kernelfit.engine.sizes.AUTO_FLOAT64_MAX_N points (K of 3.2 GB) and float32 above.
    block_size : int
        Rows per Gram-builder block. Each block is one GEMM of
        ``block_size x n_cols x d`` plus an element-wise kernel map.
    tile_size : int or None
        Tile width of the in-place tiled Cholesky. None (auto): one in-place
        LAPACK call on the whole K up to 1 GiB (kernelfit.engine.sizes.SINGLE_CALL_BYTES),
        6,144-wide tiles above (on a GPU: kernelfit.engine.sizes.DEVICE_TILE).
        Every LAPACK/BLAS call touches at most ``n * tile_size`` elements, which
        must stay < 2**31
        (SciPy's LAPACK is LP64).
    n_jobs : int
        Threads for the Gram builder. 1 lets BLAS use every core for the GEMM;
        >1 runs blocks concurrently with BLAS pinned to one thread each, which
        also spreads the element-wise exp over the cores. Measured by
        ``benchmarks/bench_gram.py`` (n = 8,000, d = 784, 2 cores): 2 threads
        with 1,024-row panels were 1.45x faster than BLAS threads alone and
        3.4x faster than scikit-learn's ``rbf_kernel``.
    jitter : None, float or "auto"
        Added to the diagonal besides ``lam``. "auto" retries a failed
        factorization with 1e-7, 1e-6, ... times the mean diagonal and records
        what it used.
    refine_steps : int
        Iterative-refinement steps after the direct solve (float64 residuals,
        corrections from the float32 factor), at most ``MAX_REFINE_STEPS``
        (100). The refinement stops early once a step fails to halve the
        residual, and records why (``solver_info_["refine_stop"]``).
    refine_against : {"auto", "stored", "exact"}
        What the refinement's residuals (and the reported residual) are
        measured against. "stored": K's own entries as stored (float32 when
        dtype is float32): cheap (one pass over the stored triangle), and the
        answer solves the rounded K (on MNIST digits its residual against the
        exact K stays near 1e-6 while the stored one reads 1e-14). "auto" (the
        default): "exact" when refining a Cholesky solve from the points on
        this machine, else "stored". "exact": K recomputed in float64 from the
        points, block by block (about one float64 Gram build per step): the
        answer then solves the exact kernel system to float64 accuracy while
        K and its factor stay float32 in memory (solver="cholesky" on points
        only; it converges while cond(K) eps_float32 < 1, and the refinement
        history says whether it did).
    tol, max_iter : float, int
        Stopping rule of the conjugate-gradient solvers (relative residual).
    precond : {"eigen", "jacobi", "none"}
        The CG solvers ("cg", "cg-matrix-free", "pcg"): EigenPro-style top
        eigenvectors of a Nyström sketch of K (:mod:`kernelfit.engine.solvers.precond`;
        matrix-free, the sketch's columns are recomputed kernel blocks), the
        diagonal, or none.
    precond_rank : int or None
        precond="eigen": eigenvectors kept (from a sketch of twice as many
        columns); None chooses them from memory and the sketched spectrum's
        decay (:func:`kernelfit.engine.solvers.precond.choose_sketch`), and for
        "cg" / "cg-matrix-free" at least 300 while their sketch fits
        (``kernelfit.engine.sizes.CG_MIN_RANK``).
    val_fraction : float
        solver="pcg": 0 stops on ``tol``; > 0 holds out this fraction of the
        training points (never test data), finds the iteration t* with the
        lowest validation error (early stopping), then refits on all training
        points, held-out ones included, for t* iterations (or to ``tol``).
    patience : int
        Early stopping: iterations without a better validation error before
        the iteration stops.
    val_min_iter : int
        Early stopping: iterations run before the rule may stop (it still
        chooses the best of all of them; ``max_iter`` still ends the run).
        A small validation set's error is noisy enough to make an early
        iterate look best for ``patience`` iterations: on full MNIST with
        val_fraction 0.02 one split stopped at iteration 7 on t* = 2 (1.68%
        test error after the refit); 10 iterations gave 1.23% there and
        changed no choice at val_fraction 0.1
        (``benchmarks/study_pcg_stopping.py``).
    memory_limit : int or None
        Bytes the planner may use; None means 90% of the available RAM. On a
        GPU it also caps what the solve may take of the device's free memory.
    storage : {"auto", "memory", "disk"}
        Where a host K lives. "memory": one in-place n x n buffer. "disk": its
        lower tiles in a file under ``scratch_dir``, factored out of core with
        three panels in RAM; the build and the factor resume after a kill
        (rerun the same command). "auto": memory when K fits, else disk.
    scratch_dir : str or None
        Folder of K's tile files (default: ``scratch`` in kernelfit's cache).
        One run at a time per folder: a fit whose K goes on disk holds the
        folder's lock, and a second one there is refused at once
        (:class:`kernelfit.errors.FileInUseError`, naming the holder's PID).
    keep_scratch : bool
        Keep K's tile files after a fit that succeeds (a later fit of the same
        K, lam and dtype then solves with the stored factor). False (default):
        they are deleted once the fit has its answer; a fit that fails or is
        killed keeps them either way, for the next run to resume from.
    device_memory : int or None
        Bytes of device memory a GPU run may use (None: what the device has
        free). K that does not fit stays in pinned host memory and is streamed
        through the device tile by tile (backend="torch").
    progress : bool
        Show progress bars on long builds and factorizations.
    backend : {"auto", "numpy", "torch", "cupy"}
        Where K is built and factored; every backend runs the same engine (the
        in-place tiled Cholesky, :mod:`kernelfit.engine.backend`). "numpy": host
        memory. "torch": one PyTorch device (CUDA if present, else the CPU).
        "cupy": one CUDA device through CuPy. "auto": a GPU when one is
        present (PyTorch, else CuPy), else NumPy.
    device : str or None
        "cpu", "cuda" or "cuda:N"; None: the backend's default (CUDA if present).
    overwrite_gram : bool
        ``kernel="precomputed"`` only: factor the caller's K in place instead
        of a copy. Halves peak memory (what makes a streamed 50,000 x 50,000 K
        solvable in 24 GB); the caller's lower triangle is destroyed, its
        strict upper triangle still holds K.
    strict : bool
        What to do with a solve that is less exact than its dtype allows (a
        residual above the dtype's threshold, CG that stopped at ``max_iter``
        short of ``tol``, a singular K answered by the pseudo-inverse): False
        (default) warns with :class:`kernelfit.errors.AccuracyWarning` and
        records it in the estimator's ``warnings_``; True raises
        :class:`kernelfit.errors.AccuracyError` instead.
    scheduler : None, "local" or "tcp://host:port"
        Build and solve K on a Dask cluster (:mod:`kernelfit.distributed`):
        "local" starts a LocalCluster of one worker process per core, an
        address connects to a running scheduler. None (default): in this
        process, and Dask is never imported.

    Every field is checked when the object is made: a bad value raises
    :class:`kernelfit.errors.InputError` naming the field, the value and what
    is accepted.
    """

    dtype: str = "auto"
    block_size: int = 1024
    tile_size: int | None = None
    n_jobs: int = 2
    jitter: float | str | None = None
    refine_steps: int = 0
    refine_against: str = "auto"
    tol: float = 1e-6
    max_iter: int = 1000
    precond: str = "eigen"
    precond_rank: int | None = None
    val_fraction: float = 0.0
    patience: int = 5
    val_min_iter: int = 10
    memory_limit: int | None = None
    storage: str = "auto"
    scratch_dir: str | None = None
    keep_scratch: bool = False
    device_memory: int | None = None
    progress: bool = False
    backend: str = "auto"
    device: str | None = None
    overwrite_gram: bool = False
    strict: bool = False
    scheduler: str | None = None

    def __post_init__(self):
        one_of("Options.dtype", self.dtype, DTYPES)
        whole("Options.block_size", self.block_size, 1, hint="rows per Gram block, e.g. 1024")
        whole("Options.tile_size", self.tile_size, 1, allow_none=True,
              hint="None for the automatic tile")
        whole("Options.n_jobs", self.n_jobs, 1, hint="threads for the Gram builder")
        if self.jitter != "auto":
            real("Options.jitter", self.jitter, 0, allow_none=True, hint="or 'auto'")
        whole("Options.refine_steps", self.refine_steps, 0, high=MAX_REFINE_STEPS,
              hint="0 turns refinement off; it converges in a few steps or not at all")
        one_of("Options.refine_against", self.refine_against, REFINE_AGAINST)
        real("Options.tol", self.tol, 0, 1, lo_open=True, hi_open=True,
             hint="the CG stopping relative residual, e.g. 1e-6")
        whole("Options.max_iter", self.max_iter, 1, hint="CG iterations, e.g. 1000")
        one_of("Options.precond", self.precond, PRECONDITIONERS)
        whole("Options.precond_rank", self.precond_rank, 1, allow_none=True,
              hint="None chooses it from memory")
        real("Options.val_fraction", self.val_fraction, 0, 1, hi_open=True,
             hint="0: stop on tol; e.g. 0.1 holds out 10% of the training set to choose "
                  "when to stop")
        whole("Options.patience", self.patience, 1,
              hint="iterations without validation improvement")
        whole("Options.val_min_iter", self.val_min_iter, 0,
              hint="iterations before early stopping may stop; 0: as soon as patience allows")
        whole("Options.memory_limit", self.memory_limit, 1, allow_none=True,
              hint="bytes; None: 90% of free RAM")
        one_of("Options.storage", self.storage, STORAGE_CHOICES)
        if self.scratch_dir is not None and not isinstance(self.scratch_dir, str):
            raise InputError(f"Options.scratch_dir must be a folder path (str) or None, "
                             f"got {self.scratch_dir!r}")
        whole("Options.device_memory", self.device_memory, 1, allow_none=True,
              hint="bytes; None: the device's free memory")
        one_of("Options.backend", self.backend, BACKENDS)
        if self.device is not None:
            if not isinstance(self.device, str) or not _DEVICE.match(self.device):
                raise InputError(f"Options.device must be None (CUDA if present, else the CPU), "
                                 f"'cpu', 'cuda' or 'cuda:N' (N a device index), "
                                 f"got {self.device!r}")
        check_backend_device(self.backend, self.device)
        if self.scheduler is not None and self.scheduler != "local":
            m = _SCHEDULER.match(self.scheduler) if isinstance(self.scheduler, str) else None
            if m is None or not 1 <= int(m.group(3)) <= 65535:
                raise InputError(f"Options.scheduler must be None (no Dask), 'local' (a "
                                 f"LocalCluster on this machine) or a running scheduler's "
                                 f"address tcp://host:port (port 1-65535), got "
                                 f"{self.scheduler!r}")
        for name in ("progress", "overwrite_gram", "strict", "keep_scratch"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"Options.{name} must be True or False, "
                                 f"got {getattr(self, name)!r}")

    def replace(self, **changes) -> Options:
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)

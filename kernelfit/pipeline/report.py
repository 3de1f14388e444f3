"""One result record per run: a dataclass, written as JSON, printed as a table.

Records are written whole or not at all (temporary file + rename), and many
records collect into a Markdown table for the experiments. A run that is less
exact than it should be (CG short of its tolerance, a residual above what the
dtype allows, a non-finite answer) says so in the record (``converged``,
``warnings``) and in a WARNING line of the table: a wrong answer must never
look like a right one.

:func:`stage` is the progress display of a stage that is one library call (a
LAPACK factorization, a prediction): a spinner with the elapsed time and the
time expected from the stage's flop count at a GEMM rate measured here.
"""

from __future__ import annotations

import functools
import platform
import resource
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from kernelfit.atomic import write_json_atomic
from kernelfit.formats import jsonable


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def versions() -> dict:
    import scipy
    import sklearn

    import kernelfit
    return {"kernelfit": kernelfit.__version__, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "sklearn": sklearn.__version__}


@dataclass
class RunRecord:
    """Everything one fit produced, as DESIGN.md lists it."""

    dataset: str
    n_train: int
    n_test: int
    kernel: dict
    solver: str
    dtype: str
    lam: float
    train_error: float
    test_error: float | None
    norm: float
    relative_residual: float
    features: str = "raw"
    # Mean over test points of |f(x) - onehot(y)|^2 (the square loss the double-descent
    # studies plot beside the zero-one error); None without test points.
    test_sq_loss: float | None = None
    # What the residual (and any refinement) was measured against: the stored K
    # (float32 when the run was) or K recomputed from the points.
    residual_against: str | None = None
    # An estimate of cond(K + lam I) after a Cholesky (kernelfit/engine/solvers/condition.py):
    # alpha's relative error is up to ~cond x eps of the working dtype.
    cond_estimate: float | None = None
    # How it was estimated: "(max l_ii / min l_ii)^2, a lower bound" can be far below cond.
    cond_estimate_method: str | None = None
    refine_history: list = field(default_factory=list)
    feature_params: dict = field(default_factory=dict)
    feature_dim: int | None = None
    preprocessing: list = field(default_factory=list)
    randomization: str = "none"
    backend: str = "numpy"
    device: str = "cpu"
    jitter: float = 0.0
    iterations: int = 0
    converged: bool = True
    warnings: list = field(default_factory=list)
    selection: dict | None = None
    timings: dict = field(default_factory=dict)
    gflops: dict = field(default_factory=dict)
    memory_plan_bytes: int | None = None
    # The Plan the fit ran with (kernelfit.engine.plan.Plan.as_dict, its options left out:
    # where K lived, dtype, backend, tiles, bytes), as `kernelfit plan` prints it.
    plan: dict | None = None
    peak_rss_bytes: int = 0
    seed: int | None = None
    versions: dict = field(default_factory=versions)
    notes: list = field(default_factory=list)
    # Iterative solvers that record it (pcg): stopping rule, preconditioner and
    # the per-iteration history (relative residual, validation error).
    convergence: dict | None = None

    def to_dict(self) -> dict:
        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> RunRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def write_json(self, path) -> Path:
        """Write the record atomically: a reader never sees half a file."""
        return write_json_atomic(path, self.to_dict())

    def table(self) -> str:
        """A readable terminal table of the headline figures and the stage times."""
        kern = ", ".join(f"{k}={_fmt(v)}" for k, v in self.kernel.items() if k != "name")
        rows = [
            ("dataset", f"{self.dataset}  (n_train={self.n_train:,}, n_test={self.n_test:,})"),
            ("features", f"{self.features}" + (f"  (dim {self.feature_dim:,})"
                                               if self.feature_dim else "")),
            ("kernel", f"{self.kernel.get('name')}  ({kern})"),
            ("solver", f"{self.solver}, {self.dtype}, lambda={_fmt(self.lam)}"
                       + (f", jitter={_fmt(self.jitter)}" if self.jitter else "")
                       + ("" if self.converged else "  (NOT CONVERGED)"
                          if self.solver.startswith(("cg", "pcg"))
                          else "  (NOT EXACT: see WARNING)")),
            ("backend", f"{self.backend} on {self.device}"),
            ("train error", pct(self.train_error)),
            ("test error", pct(self.test_error)),
            ("norm", f"{self.norm:.4g}"),
            ("residual", f"{self.relative_residual:.2e}"
                         + (f"  (against {self.residual_against})" if self.residual_against
                            else "")),
        ]
        if self.cond_estimate is not None:
            how = self.cond_estimate_method or "estimate"
            rows.append(("condition", f"{self.cond_estimate:.1e}  (cond(K + lam I): {how})"))
        if self.refine_history:
            steps = " -> ".join(f"{r:.1e}" for r in [*self.refine_history,
                                                      self.relative_residual])
            rows.append(("refinement", steps))
        if self.randomization != "none":
            rows.insert(2, ("randomization", self.randomization))
        if self.selection:
            sel = self.selection
            chosen = ", ".join(f"{k}={_fmt(v)}" for k, v in sel["params"].items())
            best = min(s["val_error"] for s in sel["scores"]
                       if isinstance(s["val_error"], float))
            at = next(i for i, (k, _) in enumerate(rows) if k == "kernel") + 1
            rows.insert(at, ("selected", f"{chosen}  (validation error {100 * best:.2f}%; "
                                        f"{sel['rule']}; {len(sel['scores'])} grid points)"))
        if self.iterations:
            refit = (self.convergence or {}).get("refit")
            rows.append(("iterations", str(self.iterations) if not refit else
                         f"{self.iterations} (validation run, t* = "
                         f"{self.convergence.get('best_iteration')}), then "
                         f"{refit['iterations']} on all training points"))
        if self.timings:
            rows.append(("time", "  ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())))
        # A rate timed over a few milliseconds of work measures the clock, not the machine.
        rates = {}
        for k, v in self.gflops.items():
            secs = self.timings.get("factor" if k == "cholesky" else k, 0.0)
            if secs >= MIN_RATE_SECONDS and v * secs >= MIN_RATE_GFLOP:
                rates[k] = v
        if rates:
            rows.append(("GFLOP/s", "  ".join(f"{k} {v:.0f}" for k, v in rates.items())))
        planned = (f"  (planned: {self.memory_plan_bytes / 2**20:,.0f} MiB besides the "
                   "process itself)" if self.memory_plan_bytes else "")
        rows.append(("peak memory", f"{self.peak_rss_bytes / 2**20:,.0f} MiB{planned}"))
        rows.extend(("note", n) for n in self.notes)
        rows.extend(("WARNING", w) for w in self.warnings)
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


# Stages shorter than this, or with less work, get no GFLOP/s figure in the table.
MIN_RATE_SECONDS = 0.5
MIN_RATE_GFLOP = 1.0


@functools.lru_cache(maxsize=2)
def gemm_gflops(dtype: str = "float64") -> float:
    """This machine's CPU GEMM rate (GFLOP/s), measured once per process.

    About half a second, paid only when a spinner is shown.
    """
    from kernelfit.engine.backend import get_backend
    return get_backend("numpy").matmul_gflops(dtype)


def expected_seconds(flops: float, dtype: str = "float64") -> float:
    """Seconds ``flops`` take at the measured GEMM rate (a floor: real stages run slower)."""
    return float(flops) / (gemm_gflops(str(dtype)) * 1e9)


@contextmanager
def stage(desc: str, *, flops: float | None = None, dtype: str = "float64",
          expected_s: float | None = None, enabled: bool = True, delay: float = 2.0,
          interval: float = 0.5, file=None):
    """A spinner for a stage that is one long library call: elapsed and expected time.

    Nothing is shown for a stage that ends within ``delay`` seconds, nor when
    ``enabled`` is False (``--quiet``). The line is refreshed every
    ``interval`` seconds by a daemon thread and removed when the stage ends.

    Parameters
    ----------
    desc : str
        What is running ("fit", "predict").
    flops, dtype : optional
        The stage's floating-point work: the expected time is that over the
        GEMM rate measured here (:func:`expected_seconds`; measured only when
        the spinner is enabled).
    expected_s : float, optional
        The expected time, given directly instead of ``flops``.
    """
    if not enabled:
        yield
        return
    if expected_s is None and flops:
        expected_s = expected_seconds(flops, dtype)
    from tqdm.auto import tqdm

    done = threading.Event()
    started = time.time()

    def spin():
        if done.wait(delay):
            return
        hint = f"expected ~{_duration(expected_s)}" if expected_s else ""
        bar = tqdm(total=None, desc=desc, bar_format="{desc}: {elapsed} elapsed{postfix}",
                   file=file or sys.stderr, leave=False, postfix=hint,
                   delay=interval)    # no first line before start_t is set
        bar.start_t = started         # elapsed since the stage began, not since the bar
        bar.refresh()
        while not done.wait(interval):
            bar.refresh()
        bar.close()

    thread = threading.Thread(target=spin, name=f"kernelfit-{desc}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else "<1 s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def markdown_table(records, columns=("dataset", "features", "kernel", "n_train", "n_test",
                                     "train_error", "test_error", "norm")) -> str:
    """Records as a Markdown table (errors in %, kernels as name + scale)."""
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    lines = []
    for r in records:
        d = r.to_dict() if isinstance(r, RunRecord) else r
        cells = []
        for c in columns:
            v = d.get(c)
            if c in ("train_error", "test_error") and v is not None:
                cells.append(f"{100 * v:.2f}%")
            elif c == "kernel" and isinstance(v, dict):
                sigma = f" (sigma={v['sigma']:.3g})" if "sigma" in v else ""
                cells.append(v.get("name", "") + sigma)
            else:
                cells.append(_fmt(v))
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def pct(v) -> str:
    """An error rate as a percentage with two decimals ("-" for None)."""
    return "-" if v is None else f"{100 * v:.2f}%"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return "-" if v is None else str(v)

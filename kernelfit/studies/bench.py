"""`kernelfit bench solve`: the n x n exact solve timed per stage, against the device's own GEMM.

For each (backend, dtype, n) a seeded synthetic problem (Gaussian points in
d = 784 dimensions, like MNIST's pixels, and ten one-hot targets) is fitted by
:class:`kernelfit.model.KernelInterpolant` itself, so every stage timed is the
library's own code path for that backend (Gram build, factorization,
triangular solves, residual): nothing here re-implements them. Each row
records:

- seconds of the Gram build, the factor, the solves and the whole fit;
- the factor's GFLOP/s (n^3 / 3 flops) and its ratio to the matmul peak of the
  SAME device and dtype, measured in the same run (NumPy: a warmed GEMM;
  PyTorch: ``torch.matmul`` on the device, synchronized, TF32 off so that
  float32 means float32 in the peak and in the factor alike);
- the solve's relative residual and the limit the library's quality gate
  (:func:`kernelfit.engine.solvers.solve.check_solution`) holds it to, so a fast
  wrong answer cannot look good: such a row says INACCURATE.

A backend that is not installed, or has no device, is skipped with the reason
in the table and the JSON; an n that the planner says does not fit is skipped
with the planner's message before anything large is allocated. Measured rows
go through :class:`kernelfit.pipeline.results.ResultStore`: a rerun with the
same result-changing settings on the same device reuses them (``fresh=True``
measures again).

The devices and their peak are in :mod:`kernelfit.engine.backend.device`,
the table and the plot in :mod:`kernelfit.studies.bench_report`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from kernelfit.atomic import write_json_atomic, write_text_atomic
from kernelfit.engine.backend.device import Device, matmul_peak, no_tf32, probe
from kernelfit.engine.plan import plan_fit
from kernelfit.errors import InputError, PlanError
from kernelfit.options import Options
from kernelfit.params import one_of, whole
from kernelfit.pipeline.report import versions
from kernelfit.pipeline.results import ResultStore, result_settings
from kernelfit.studies.bench_report import _num, markdown, plot_bench

#: Backends the benchmark knows how to look for (the library may not run all of them yet).
BACKENDS = ("numpy", "torch", "cupy")
DTYPES = ("float32", "float64")
#: MNIST's pixel count: the default dimension of the synthetic points.
D_MNIST = 784
#: One-hot targets per point (MNIST's ten classes).
N_OUTPUTS = 10


@dataclass
class BenchConfig:
    """What `kernelfit bench solve` measures; validated on construction (:class:`InputError`)."""

    sizes: list = field(default_factory=lambda: [5000, 10000, 20000])
    backends: list = field(default_factory=lambda: list(BACKENDS))
    dtypes: list = field(default_factory=lambda: list(DTYPES))
    d: int = D_MNIST
    repeat: int = 1
    seed: int = 0
    device: str | None = None       # torch: "cuda", "cuda:1", "cpu"; None: CUDA when present
    peak_size: int | None = None    # None: PEAK_SIZE of the device kind

    def __post_init__(self):
        self.sizes = [whole("--n / sizes", v, 2) for v in _listed(self.sizes, "sizes")]
        self.backends = _choices(self.backends, BACKENDS, "--backend / backends")
        self.dtypes = _choices(self.dtypes, DTYPES, "--dtype / dtypes")
        self.d = whole("--d / d", self.d, 1)
        self.repeat = whole("--repeat / repeat", self.repeat, 1)
        self.seed = whole("--seed / seed", self.seed, 0)
        if self.peak_size is not None:
            self.peak_size = whole("--peak-size / peak_size", self.peak_size, 64)
        if self.device is not None:
            # Options says what a valid torch device is, with its own message.
            Options(backend="torch", device=self.device)


def _listed(values, name: str) -> list:
    values = [values] if isinstance(values, (str, int)) else list(values)
    if not values:
        raise InputError(f"{name} must name at least one value")
    return values


def _choices(values, allowed, name: str) -> list:
    out = []
    for v in _listed(values, name):
        if one_of(name, v, allowed) not in out:
            out.append(v)
    return out


# -- data -----------------------------------------------------------------------------------
def synthetic_problem(n: int, d: int = D_MNIST, seed: int = 0):
    """Seeded Gaussian points X (n, d) float64 and one-hot targets Y (n, 10); same seed, same bits.

    With the scale gamma = 1 / d (:func:`bench_gamma`) two points' kernel value is
    about exp(-2) and K is well conditioned, so the residual measures the solver,
    not the problem.
    """
    rng = np.random.default_rng([seed, n, d])
    X = rng.standard_normal((n, d))
    Y = np.eye(N_OUTPUTS)[rng.integers(0, N_OUTPUTS, n)]
    return X, Y


def bench_gamma(d: int) -> float:
    """Gaussian kernel scale of the benchmark: exp(-|x - y|^2 / d)."""
    return 1.0 / d

# -- one point --------------------------------------------------------------------------------
def _options(dev: Device, dtype: str) -> Options:
    return Options(dtype=dtype, backend=dev.backend,
                   device=dev.device if dev.backend != "numpy" else None, progress=False)


def plan_point(dev: Device, dtype: str, n: int, d: int) -> None:
    """The planner's verdict on n for this backend; raises :class:`PlanError` if it does not fit.

    The fit's own plan: host memory for NumPy and PyTorch on the CPU, the
    device's memory (or host tiles streamed through it) on a GPU.
    """
    from kernelfit.engine.backend import resolve_backend
    opts = _options(dev, dtype)
    plan_fit(n, d, N_OUTPUTS, options=opts, backend=resolve_backend(opts))


def measure_point(dev: Device, dtype: str, n: int, cfg: BenchConfig) -> dict:
    """Fit the synthetic problem ``cfg.repeat`` times; the fastest whole fit's stage times."""
    from kernelfit.model import KernelInterpolant

    X, Y = synthetic_problem(n, cfg.d, cfg.seed)
    best = None
    for _ in range(cfg.repeat):
        model = KernelInterpolant(kernel="gaussian", gamma=bench_gamma(cfg.d),
                                  options=_options(dev, dtype))
        t = time.perf_counter()
        model.fit(X, Y)
        total = time.perf_counter() - t
        if best is None or total < best[0]:
            best = (total, model)
    total, model = best
    tm = model.timings_
    info = model.solver_info_
    # A K singular to working precision is answered by K^+ y, with no Cholesky to time.
    factor_s = float(tm["factor"]) if "factor" in tm else None
    return {
        "solved_by": f"K^+ y ({info['pinv_reason']})" if "pinv_reason" in info else "cholesky",
        "gram_s": float(tm["gram"]), "factor_s": factor_s, "solve_s": float(tm["solve"]),
        "residual_s": float(tm.get("residual", 0.0)), "total_s": total,
        # the builder computes one triangle; the rate counts the whole n x n product,
        # 2 n^2 d flops, which is what a GEMM of X X^T would have done
        "gram_gflops": 2 * n * n * cfg.d / 1e9 / max(float(tm["gram"]), 1e-12),
        "storage": str(info.get("storage", "host")),
        "factor_gflop": n**3 / 3 / 1e9,
        "factor_gflops": n**3 / 3 / 1e9 / max(factor_s, 1e-12) if factor_s else None,
        "relative_residual": float(model.relative_residual_),
        "residual_limit": float(info["residual_limit"]),
        "converged": bool(model.converged_), "warnings": list(model.warnings_),
        "jitter": float(info.get("jitter", 0.0)), "norm": float(model.norm_),
        "train_error": float(model.train_error_), "timings": {k: float(v) for k, v in tm.items()},
    }


# -- the whole benchmark ----------------------------------------------------------------------
def run_bench(cfg: BenchConfig, out, *, plot: bool = True, fresh: bool = False,
              log=None) -> dict:
    """Measure every (backend, dtype, n) of ``cfg``; write OUT/bench_solve.{json,md,png}.

    Returns the JSON document (also written atomically to ``OUT/bench_solve.json``).
    """
    say = log or (lambda msg: None)
    out = Path(out)
    store = ResultStore(out / "points")
    devices = {b: probe(b, cfg.device if b == "torch" else None) for b in cfg.backends}
    rows, peaks = [], {}
    with no_tf32():
        for b, dev in devices.items():
            for dtype in cfg.dtypes:
                base = {"backend": b, "device": dev.device, "device_name": dev.name,
                        "dtype": dtype}
                if dev.skipped:
                    if dtype == cfg.dtypes[0]:
                        say(f"{b}: skipped: {dev.skipped}")
                    rows += [{**base, "n": n, "status": "skipped", "reason": dev.skipped}
                             for n in cfg.sizes]
                    continue
                before = matmul_peak(dev, dtype, cfg.peak_size)
                # One small untimed fit first: the first call into a library pays for
                # imports, thread start-up and kernel selection, which no n should carry.
                measure_point(dev, dtype, 128, replace(cfg, repeat=1))
                new = []
                for n in cfg.sizes:
                    row, point = _point(dev, dtype, n, cfg, base, store, fresh, say)
                    rows.append(row)
                    if point:
                        new.append((row, point))
                # The peak is measured before and after the points, and the better one
                # kept: a neighbour's burst on a shared machine lowers one of them and
                # would inflate every ratio.
                after = matmul_peak(dev, dtype, cfg.peak_size)
                peak = max(before, after, key=lambda p: p["gflops"])
                peak["measured_gflops"] = [before["gflops"], after["gflops"]]
                peaks.setdefault(f"{b}/{dev.device}", {})[dtype] = peak
                say(f"{b} on {dev.device} ({dev.name}): {dtype} matmul peak "
                    f"{peak['gflops']:.1f} GFLOP/s ({peak['size']}^3; before/after the "
                    f"points {before['gflops']:.1f}/{after['gflops']:.1f})")
                for row, (name, settings) in new:
                    _rate(row, peak, say)
                    store.save(name, settings, {k: v for k, v in row.items()
                                                if k not in base and k not in ("n", "reused")})
    doc = {
        "benchmark": "solve",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": asdict(cfg), "kernel": {"name": "gaussian", "gamma": bench_gamma(cfg.d)},
        "data": f"seeded standard Gaussian points, d = {cfg.d}, {N_OUTPUTS} one-hot targets",
        "tf32": False,
        "versions": {**versions(), **{k: v for dv in devices.values()
                                      for k, v in dv.versions.items()}},
        "devices": {b: asdict(dv) for b, dv in devices.items()},
        "peaks": peaks, "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "bench_solve.json", doc)
    write_text_atomic(out / "bench_solve.md", markdown(doc) + "\n")
    if plot:
        doc["png"] = str(plot_bench(doc, out / "bench_solve.png"))
    return doc


def _point(dev, dtype, n, cfg, base, store, fresh, say):
    """One row, and (name, settings) when it was measured now (saved once its rate is set)."""
    settings = result_settings({**base, "n": n, "d": cfg.d, "seed": cfg.seed,
                                "repeat": cfg.repeat, "gamma": bench_gamma(cfg.d),
                                "versions": dev.versions})
    name = f"{dev.backend}-{dev.device.replace(':', '')}-{dtype}-n{n}-d{cfg.d}"
    try:
        plan_point(dev, dtype, n, cfg.d)
    except PlanError as err:
        say(f"{name}: skipped: {err}")
        return {**base, "n": n, "status": "skipped", "reason": f"planner: {err}"}, None
    saved = None if fresh else store.load(name, settings)
    if saved is not None:
        say(f"{name}: reusing {store.path(name)}")
        return {**base, "n": n, **{k: v for k, v in saved.items() if k != "settings"},
                "reused": True}, None
    say(f"{name}: running")
    try:
        # An inexact solve warns (AccuracyWarning) as any fit does, and its row says so.
        m = measure_point(dev, dtype, n, cfg)
    except PlanError as err:     # the device's own memory check (torch on a GPU)
        say(f"{name}: skipped: {err}")
        return {**base, "n": n, "status": "skipped", "reason": f"planner: {err}"}, None
    m["status"] = ("ok" if m["converged"] and m["solved_by"] == "cholesky" else
                   "INACCURATE" if not m["converged"] else "not Cholesky: " + m["solved_by"])
    say(f"{name}: factor {_num(m['factor_s'], '.2f')} s = {_num(m['factor_gflops'], '.1f')} "
        f"GFLOP/s, total {m['total_s']:.2f} s, residual {m['relative_residual']:.1e}, "
        f"{m['status']}")
    return {**base, "n": n, **m, "reused": False}, (name, settings)


def _rate(row: dict, peak: dict, say) -> None:
    """The factor's rate as a share of the device's measured matmul peak, into ``row``."""
    rate = row["factor_gflops"]
    row.update(peak_gflops=peak["gflops"],
               factor_vs_peak=rate / peak["gflops"] if rate else None,
               gram_vs_peak=row["gram_gflops"] / peak["gflops"] if "gram_gflops" in row
               else None)
    if rate and rate > peak["gflops"]:
        # Not a faster-than-GEMM factor: this matmul path of the library is slower than
        # the one its LAPACK uses (PyTorch on a CPU), or the machine was busy.
        row["peak_note"] = (f"factor {rate:.1f} GFLOP/s above the measured matmul peak "
                            f"{peak['gflops']:.1f}: the peak understates this device")
        say(f"{row['backend']} {row['dtype']} n={row['n']:,}: {row['peak_note']}")

"""Issue 8's GPU numbers in one script: one call on a lent device measures them all.

Each check runs in its own try block and appends a record to OUT/device_checks.json
as soon as it ends (a check that fails or runs out of time leaves the others' numbers):

1. ``peaks``: the device's own float32 (TF32 off) and float64 matmul rate.
2. ``mnist-*``: the whole ``kernelfit run`` on full MNIST (60,000 x 60,000 Gaussian,
   sigma 5) on ``--backend torch`` float32 and float64 and ``--backend cupy`` float32:
   Gram, factor, solve, whole-run seconds, test error, residual, and the Gram's and
   factor's share of the measured peak.
3. ``bench``: ``kernelfit bench solve`` on the device (table, JSON, PNG).
4. ``in-place``: n = 150,000 float32 (90 GB) built and factored in one n x n buffer
   on the device, through the estimator (plan, Gram, factor, solve, residual).
5. ``past-device-memory``: n = 100,000 float32 with the device capped at 20 GB
   (``Options.device_memory``): K's lower tiles in pinned host memory, streamed;
   the factor's GFLOP/s against the same n factored in device memory.
6. ``pytest -m gpu``: CuPy and PyTorch-CUDA against NumPy.

``--small`` shrinks every size so that the script runs on a CPU (PyTorch CPU):
that is how it is tested before it costs device time (tests/test_device_checks.py).

Usage on the device::

    python benchmarks/gpu/device_checks.py --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the JSON record and the bench files")
    p.add_argument("--small", action="store_true", help="CPU-sized problems (the script's test)")
    p.add_argument("--only", nargs="*", default=None,
                   help="run only these checks (peaks mnist bench tiles in-place "
                        "past-device-memory pytest)")
    p.add_argument("--bench-n", nargs="+", default=None, metavar="N",
                   help="the bench's sizes (default 10,000 .. 60,000)")
    p.add_argument("--bench-backends", nargs="+", default=None, metavar="NAME")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = Record(out / "device_checks.json")
    import torch
    cuda = torch.cuda.is_available()
    record.add("device", {
        "name": torch.cuda.get_device_name() if cuda else "cpu (no CUDA device)",
        "torch": torch.__version__, "cuda": torch.version.cuda, "small": args.small,
        "total_memory": torch.cuda.get_device_properties(0).total_memory if cuda else None,
        "cupy": _cupy_version()})
    checks = [("peaks", peaks), ("mnist", mnist_runs), ("bench", bench), ("tiles", tiles),
              ("in-place", in_place), ("past-device-memory", past_device_memory),
              ("pytest", gpu_tests)]
    for name, fn in checks:
        if args.only is not None and name not in args.only:
            continue
        t = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            fn(record, out, args.small, cuda, **({"args": args} if fn is bench else {}))
        except Exception as err:  # noqa: BLE001 - one check's failure must not end the others
            record.add(f"{name}-error", {"error": f"{type(err).__name__}: {err}",
                                         "traceback": traceback.format_exc()[-3000:]})
            print(traceback.format_exc(), flush=True)
        print(f"== {name} done in {time.perf_counter() - t:.1f} s", flush=True)
    return 0


class Record:
    """The JSON record, rewritten whole after every check."""

    def __init__(self, path: Path):
        self.path, self.items = path, {}

    def add(self, key: str, value) -> None:
        self.items[key] = value
        tmp = self.path.with_name(self.path.name + ".tmp")   # same folder: replace is atomic
        tmp.write_text(json.dumps(self.items, indent=1, default=float))
        os.replace(tmp, self.path)
        print(f"   {key}: {json.dumps(value, default=float)[:600]}", flush=True)


def _cupy_version():
    try:
        import cupy
        return cupy.__version__
    except ImportError:
        return None


def peaks(record, out, small, cuda):
    from kernelfit.studies.bench import matmul_peak, no_tf32, probe
    dev = probe("torch", "cuda" if cuda else "cpu")
    with no_tf32():
        for dt in ("float32", "float64"):
            record.add(f"peak-{dt}", matmul_peak(dev, dt, size=1024 if small else 8192))


def mnist_runs(record, out, small, cuda):
    """Whole runs through the command line, as a user would type them."""
    runs = [("torch", "float32"), ("torch", "float64"), ("cupy", "float32")]
    for backend, dtype in runs:
        if backend == "cupy" and not cuda:
            continue
        name = f"mnist-{backend}-{dtype}"
        # the run's own record is summarized into ours: few files travel back from a device
        path = Path(tempfile.gettempdir()) / f"{name}.json"
        cmd = [sys.executable, "-m", "kernelfit.cli", "run", "--dataset",
               "digits" if small else "mnist", "--sigma", "5", "--dtype", dtype,
               "--backend", backend, "--json", str(path), "--quiet"]
        if small:
            cmd[cmd.index("5")] = "3"
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            record.add(name, {"rc": proc.returncode, "stderr": proc.stderr[-2000:]})
            continue
        rec = json.loads(path.read_text())
        record.add(name, {"wall_s": wall, "stdout": proc.stdout[-1500:], **_summary(rec)})


def _summary(rec: dict) -> dict:
    keys = ("train_error", "test_error", "norm", "relative_residual", "converged", "timings",
            "backend", "device", "n_train", "solver_info", "peak_memory")
    return {k: rec[k] for k in keys if k in rec}


def bench(record, out, small, cuda, args=None):
    ns = ["500", "1000"] if small else ["10000", "20000", "40000", "60000"]
    backends = ["torch"] + (["cupy"] if cuda else [])
    if args is not None and args.bench_n:
        ns = args.bench_n
    if args is not None and args.bench_backends:
        backends = args.bench_backends
    cmd = [sys.executable, "-m", "kernelfit.cli", "bench", "solve", "--n", *ns,
           "--backend", *backends, "--dtype", "float32", "float64",
           "--out", str(out / "bench"), "--fresh"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    record.add("bench", {"rc": proc.returncode, "stdout": proc.stdout[-4000:],
                         "stderr": proc.stderr[-1500:]})


def _fit(n: int, d: int, dtype: str, **option_changes):
    """The estimator on the bench's synthetic problem; stage times and where K lived."""
    from kernelfit import Options
    from kernelfit.model import KernelInterpolant
    from kernelfit.studies.bench import bench_gamma, synthetic_problem
    X, Y = synthetic_problem(n, d, 0)
    opts = Options(backend="torch", dtype=dtype, **option_changes)
    t = time.perf_counter()
    m = KernelInterpolant(gamma=bench_gamma(d), lam=1e-3, options=opts).fit(X, Y)
    wall = time.perf_counter() - t
    info = m.solver_info_
    return {"n": n, "d": d, "dtype": dtype, "wall_s": wall, "plan": m.plan_.as_dict(),
            "timings": m.timings_, "factor_gflops": info.get("gflops"),
            "storage": info.get("storage"), "relative_residual": m.relative_residual_,
            "converged": m.converged_, "warnings": m.warnings_,
            "peak_device_memory": _peak_memory()}


def tiles(record, out, small, cuda):
    """The device factor's rate against its tile width, at full MNIST's n (float32)."""
    n = 2000 if small else 60_000
    widths = (256, 512) if small else (6144, 8192, 12288, 16384)
    for tile in widths:
        r = _fit(n, 784, "float32", tile_size=tile)
        record.add(f"tile-{tile}", {k: r[k] for k in ("timings", "factor_gflops",
                                                       "relative_residual", "converged")})


def _peak_memory():
    import torch
    if not torch.cuda.is_available():
        return None
    peak = torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    return peak


def in_place(record, out, small, cuda):
    n = 3000 if small else 150_000
    record.add("in-place", _fit(n, 32, "float32"))


def past_device_memory(record, out, small, cuda):
    n = 2000 if small else 100_000
    cap = int(2e7 if small else 20e9)
    streamed = _fit(n, 32, "float32", device_memory=cap)
    record.add("past-device-memory", {"device_memory": cap, **streamed})
    resident = _fit(n, 32, "float32")
    record.add("same-n-in-device-memory", resident)
    if streamed["factor_gflops"] and resident["factor_gflops"]:
        record.add("past-device-memory-ratio",
                   {"streamed_vs_in_memory": streamed["factor_gflops"]
                    / resident["factor_gflops"]})


def gpu_tests(record, out, small, cuda):
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
           "tests/test_engine.py", "tests/test_torch_backend.py"]
    if small:
        cmd += ["-k", "numpy"]           # the CPU test: the selection machinery only
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    record.add("pytest-gpu", {"rc": proc.returncode, "tail": proc.stdout[-3000:]})


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())

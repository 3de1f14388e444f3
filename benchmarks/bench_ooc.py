"""K bigger than RAM: the exact solve with K's tiles on disk, against the in-memory one.

Two measurements, each in a fresh worker process (its own peak RSS):

1. n = 30,000 MNIST (float32, Gaussian sigma = 5): in memory, and forced out
   of core (``storage="disk"``, 6,144-wide tiles): the largest relative
   difference of alpha, and both times.
2. n = 80,000 (MNIST's 60,000 training images and 20,000 copies of them
   shifted by one pixel; float32 K of 25.6 GB on a 24 GB machine) under an
   8 GB memory limit: the whole out-of-core build and exact solve, peak RSS,
   residual and test error on MNIST's test set.

    python benchmarks/bench_ooc.py                 # both (~1 h on 2 cores)
    python benchmarks/bench_ooc.py --only compare  # the n = 30,000 comparison
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import gemm_peak, mnist_like, run_worker  # noqa: E402


def shifted_copies(X: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` training images moved by one pixel (right, left, down or up), zero-filled."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(X), count, replace=False)
    ims = X[idx].reshape(count, 28, 28)
    out = np.zeros_like(ims)
    for k, (axis, step) in enumerate(rng.choice([(1, 1), (1, -1), (0, 1), (0, -1)], count)):
        src = np.roll(ims[k], step, axis=axis)
        edge = (slice(None),) * axis + ((0,) if step > 0 else (-1,))
        src[edge] = 0            # what rolled around the border is blank, not wrapped
        out[k] = src
    return out.reshape(count, -1), idx


def worker(args) -> dict:
    from kernelfit import Options
    from kernelfit.model import KernelInterpolantClassifier
    n_base = min(args.n, 60_000)
    X, y, Xt, yt, source = mnist_like(n_base, 10_000, seed=0)
    if args.n > n_base:
        extra, idx = shifted_copies(X, args.n - n_base)
        X, y = np.vstack([X, extra]), np.concatenate([y, y[idx]])
    opts = Options(dtype=args.dtype, storage=args.storage, tile_size=args.tile,
                   scratch_dir=args.scratch, memory_limit=args.memory_limit, progress=False)
    t = time.perf_counter()
    clf = KernelInterpolantClassifier(sigma=5.0, options=opts).fit(X, y)
    fit_s = time.perf_counter() - t
    test_error = float(np.mean(clf.predict(Xt) != yt))
    if args.alpha_out:
        np.save(args.alpha_out, clf.dual_coef_)
    return {"n": len(X), "data": source + (" + shifted copies" if args.n > n_base else ""),
            "storage": clf.solver_info_["storage"], "tile": clf.plan_.tile,
            "plan": clf.plan_.as_dict(), "fit_s": fit_s, "timings": clf.timings_,
            "factor_gflops": clf.solver_info_.get("gflops"),
            "relative_residual": clf.relative_residual_, "converged": clf.converged_,
            "test_error": test_error, "norm": clf.norm_,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=30_000)
    p.add_argument("--storage", default="memory")
    p.add_argument("--tile", type=int, default=None)
    p.add_argument("--scratch", default=None)
    p.add_argument("--memory-limit", type=int, default=None)
    p.add_argument("--alpha-out", default=None)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                   help="K's precision (the n = 30,000 comparison; float64 shows the two "
                        "factors agree far below float32's conditioning-bound differences)")
    p.add_argument("--only", choices=("compare", "large"), default=None)
    p.add_argument("--large-n", type=int, default=80_000)
    p.add_argument("--out", default="results/bench_ooc.json")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    doc = {"gemm_gflops_float32": gemm_peak(), "runs": {}}
    # the scratch (GBs of tiles) in the system's temporary folder, never in the repository
    with tempfile.TemporaryDirectory(prefix="kernelfit-ooc-") as tmp:
        if args.only in (None, "compare"):
            a_mem, a_disk = Path(tmp) / "mem.npy", Path(tmp) / "disk.npy"
            dt = ["--dtype", args.dtype]
            mem = run_worker(__file__, ["--n", "30000", "--storage", "memory", *dt,
                                        "--alpha-out", str(a_mem)])
            disk = run_worker(__file__, ["--n", "30000", "--storage", "disk", "--tile", "6144",
                                         *dt, "--scratch", tmp, "--alpha-out", str(a_disk)])
            A, B = np.load(a_mem), np.load(a_disk)
            diff = float(np.max(np.abs(A - B)) / np.max(np.abs(A)))
            doc["runs"][f"n30000_{args.dtype}"] = {"memory": mem, "disk": disk,
                                     "alpha_max_relative_difference": diff}
            print(f"n=30,000 {args.dtype}: memory {mem['fit_s']:.0f} s, disk "
                  f"{disk['fit_s']:.0f} s, alpha differs by {diff:.1e} (relative to max "
                  "|alpha|)", flush=True)
        if args.only in (None, "large"):
            big = run_worker(__file__, ["--n", str(args.large_n), "--storage", "disk",
                                        "--scratch", tmp, "--memory-limit", str(8 * 10**9)])
            doc["runs"][f"n{args.large_n}"] = big
            print(f"n={big['n']:,}: {big['fit_s']:.0f} s, peak RSS {big['peak_rss_gb']:.1f} GB, "
                  f"tile {big['tile']:,}, residual {big['relative_residual']:.1e}, test error "
                  f"{100 * big['test_error']:.2f}%", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1, default=float))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

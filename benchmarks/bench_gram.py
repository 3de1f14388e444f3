"""The Gram builder: threads vs BLAS threads, block sizes, and scikit-learn's rbf_kernel.

Measures, side by side in one run on the same data:

- kernelfit's ``build_gram`` with ``n_jobs=1`` (BLAS uses every core for each
  panel's GEMM; the element-wise exp runs on one) and ``n_jobs=2`` (panels on
  two joblib threads, BLAS pinned to one thread each), for a few block sizes;
- scikit-learn's ``rbf_kernel(X)`` (the whole matrix, float64 or float32 as given);
- this machine's float32 GEMM peak: the builder's useful GFLOP/s (n^2 d for
  the upper triangle, the half it computes) is reported as a fraction of it.

This is the measurement behind ``Options.n_jobs`` and ``Options.block_size``.

    python benchmarks/bench_gram.py            # n = 10,000, d = 784 (MNIST-sized)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import gemm_peak  # noqa: E402

from kernelfit import Options  # noqa: E402
from kernelfit.atomic import write_json_atomic  # noqa: E402
from kernelfit.engine.gram.panels import build_gram  # noqa: E402
from kernelfit.engine.kernels import make_kernel  # noqa: E402


def best_of(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--d", type=int, default=784)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json", default="results/bench_gram.json")
    args = ap.parse_args(argv)
    from sklearn.metrics.pairwise import rbf_kernel

    rng = np.random.default_rng(0)
    X = rng.random((args.n, args.d), dtype=np.float32)
    kern = make_kernel("gaussian", sigma=5.0)
    peak = gemm_peak()
    flop = args.n * args.n * args.d            # 2 n^2 d / 2: the upper triangle only
    out = np.empty((args.n, args.n), dtype=np.float32)
    rows = []
    for n_jobs in (1, 2):
        for block in (1024, 2048, 4096):
            opts = Options(dtype="float32", n_jobs=n_jobs, block_size=block)
            s = best_of(lambda o=opts, b=out: build_gram(X, kern, out=b, options=o), args.reps)
            rows.append({"builder": f"kernelfit n_jobs={n_jobs} block={block}", "seconds": s,
                         "gflops": flop / s / 1e9, "vs_gemm": flop / s / 1e9 / peak})
    del out
    s = best_of(lambda: rbf_kernel(X, gamma=kern.gamma), args.reps)
    rows.append({"builder": "sklearn rbf_kernel (float32 in)", "seconds": s,
                 "gflops": flop / s / 1e9, "vs_gemm": flop / s / 1e9 / peak})
    print(f"n={args.n} d={args.d}  float32 GEMM peak {peak:.0f} GFLOP/s")
    fastest = min(r["seconds"] for r in rows if r["builder"].startswith("kernelfit"))
    for r in rows:
        print(f"  {r['builder']:<36} {r['seconds']:6.2f} s  {r['gflops']:6.1f} GFLOP/s "
              f"({100 * r['vs_gemm']:3.0f}% of GEMM)  x{r['seconds'] / fastest:4.2f} of fastest")
    write_json_atomic(args.json, {"n": args.n, "d": args.d, "gemm_gflops": peak, "rows": rows})
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

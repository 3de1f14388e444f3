"""The n x n exact solve: kernelfit against scikit-learn's KernelRidge, and against the machine.

For each n: kernelfit's in-core exact solve (float32 K, tiled in-place
Cholesky, lam = 0) and ``KernelRidge(alpha=1e-8, kernel="rbf")`` on the same
data and kernel, each in a fresh process: wall time of fit + predict, peak
RSS, and how often the two predicted classes agree. The tiled Cholesky's
GFLOP/s is reported as a fraction of this machine's float32 GEMM GFLOP/s,
measured in the same run.

    python benchmarks/bench_solve.py                   # n = 2,000 / 5,000 / 10,000
    python benchmarks/bench_solve.py --n 60000 --no-sklearn   # full MNIST, factor in place

Data: real MNIST when it is in kernelfit's cache (`kernelfit data fetch mnist`),
else MNIST-like synthetic images (same d = 784, pixels in [0, 1]).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import gemm_peak, mnist_like, run_worker  # noqa: E402

from kernelfit.atomic import write_json_atomic  # noqa: E402

SIGMA = 5.0                 # Gaussian bandwidth on [0, 1] pixels (the paper's MNIST setting)
GAMMA = 0.5 / SIGMA**2


def torch_gemm_peak(n: int = 8192, reps: int = 5) -> float:
    """float32 GEMM GFLOP/s on the torch device (TF32 off: the solve runs in true float32)."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    A = torch.randn(n, n, device=dev)
    B = torch.randn(n, n, device=dev)
    A @ B
    best = float("inf")
    for _ in range(reps):
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        A @ B
        if dev == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def worker(kind: str, n: int, n_test: int, pred_path: str) -> dict:
    from kernelfit.pipeline.report import peak_rss_bytes
    Xtr, ytr, Xte, yte, source = mnist_like(n, n_test)
    base_rss = peak_rss_bytes()
    Y = np.eye(10)[ytr]
    # Imports happen before the clock starts: fit + predict is what is compared.
    from sklearn.kernel_ridge import KernelRidge

    from kernelfit import Options
    from kernelfit.model import KernelInterpolant
    t = time.perf_counter()
    if kind.startswith("kernelfit"):
        backend = "torch" if kind == "kernelfit-torch" else "numpy"
        m = KernelInterpolant(gamma=GAMMA, options=Options(dtype="float32", backend=backend))
        m.fit(Xtr, Y)
        fit_s = time.perf_counter() - t
        extra = {"timings": m.timings_, "cholesky_gflops": m.solver_info_["gflops"],
                 "norm": m.norm_, "relative_residual": m.relative_residual_}
    else:
        m = KernelRidge(alpha=1e-8, kernel="rbf", gamma=GAMMA).fit(Xtr, Y)
        fit_s = time.perf_counter() - t
        extra = {}
    t = time.perf_counter()
    pred = np.argmax(m.predict(Xte), axis=1)
    predict_s = time.perf_counter() - t
    np.save(pred_path, pred)
    return {"kind": kind, "n": n, "data": source, "fit_s": fit_s, "predict_s": predict_s,
            "total_s": fit_s + predict_s, "test_error": float(np.mean(pred != yte)),
            "peak_rss": peak_rss_bytes(), "data_rss": base_rss, **extra}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[2000, 5000, 10000])
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--no-sklearn", action="store_true", help="kernelfit only (large n)")
    ap.add_argument("--backend", choices=("numpy", "torch"), default="numpy",
                    help="torch: K built and factored on the GPU (cuSOLVER) when there is one")
    ap.add_argument("--json", default="results/bench_solve.json")
    ap.add_argument("--worker", nargs=4, metavar=("KIND", "N", "N_TEST", "PRED"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        kind, n, n_test, pred = args.worker
        print(json.dumps(worker(kind, int(n), int(n_test), pred)))
        return 0

    kf_kind = "kernelfit" if args.backend == "numpy" else "kernelfit-torch"
    peak = gemm_peak() if args.backend == "numpy" else torch_gemm_peak()
    print(f"float32 GEMM peak ({args.backend}): {peak:.0f} GFLOP/s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.n:
            kf = run_worker(__file__, [kf_kind, str(n), str(args.n_test), f"{tmp}/kf.npy"])
            row = {"n": n, "data": kf["data"], "kernelfit": kf,
                   "cholesky_vs_gemm": kf["cholesky_gflops"] / peak,
                   "rss_limit": 1.25 * n * n * 4 + 300e6}
            if not args.no_sklearn:
                kr = run_worker(__file__, ["sklearn", str(n), str(args.n_test), f"{tmp}/kr.npy"])
                row["sklearn"] = kr
                row["time_ratio"] = kf["total_s"] / kr["total_s"]
                same = np.load(f"{tmp}/kf.npy") == np.load(f"{tmp}/kr.npy")
                row["agreement"] = float(np.mean(same))
            rows.append(row)
            _print_row(row)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.json, {"backend": args.backend, "gemm_gflops": peak, "rows": rows})
    print(f"written {args.json}")
    return 0


def _print_row(r: dict) -> None:
    kf = r["kernelfit"]
    gb = 1e9
    line = (f"n={r['n']:>6} [{r['data']}]  kernelfit {kf['total_s']:7.1f}s  "
            f"peak RSS {kf['peak_rss'] / gb:5.2f} GB (limit {r['rss_limit'] / gb:5.2f})  "
            f"cholesky {kf['cholesky_gflops']:5.0f} GFLOP/s = {100 * r['cholesky_vs_gemm']:3.0f}% "
            f"of GEMM  test err {100 * kf['test_error']:.2f}%")
    if "sklearn" in r:
        kr = r["sklearn"]
        line += (f"\n          KernelRidge {kr['total_s']:7.1f}s  "
                 f"peak RSS {kr['peak_rss'] / gb:5.2f} GB"
                 f"  time ratio {r['time_ratio']:.2f}  argmax agreement "
                 f"{100 * r['agreement']:.2f}%  test err {100 * kr['test_error']:.2f}%")
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())

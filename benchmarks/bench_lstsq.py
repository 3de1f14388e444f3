"""The double-descent study's N < n least squares: blocked QR against the SVD, side by side.

`kernelfit study double-descent` fits w = Phi^+ Y on N < n random Fourier
features with :func:`kernelfit.studies.followups.double_descent.min_norm_lstsq`
(blocked Householder QR where Phi has full column rank, the SVD otherwise).
Until it did, the fit was SciPy's SVD-based ``gelsd``, whose bidiagonalization
runs at matrix-vector speed. For each N this builds the study's own Phi (its
config, seed 0) and times both in one process on the same matrix, with

* the two solutions' relative difference ||W_qr - W_svd||_F / ||W_svd||_F;
* each one's normal-equations backward error (a few float64 epsilons for a
  backward-stable solve);
* which road ``min_norm_lstsq`` took.

Writes ``bench_lstsq_<dataset>_n<n>_<machine>.json`` and ``.md``:

    python benchmarks/bench_lstsq.py --n 10000 --N 2500 5000 9000
    python benchmarks/bench_lstsq.py --dataset digits --n 600 --N 100 400   # seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg

from kernelfit.atomic import write_json_atomic, write_text_atomic
from kernelfit.engine.backend.device import machine_label
from kernelfit.studies.followups.double_descent import (
    DoubleDescentStudy,
    backward_error,
    min_norm_lstsq,
    primal_problem,
)


def measure(study: DoubleDescentStudy, N: int) -> dict:
    """Both solves of one N on the same Phi: times, agreement, backward errors."""
    _, _, Phi, _, _, Y = primal_problem(study.config(0, N))
    t = time.perf_counter()
    W_qr, rank, method = min_norm_lstsq(Phi, Y)
    t_qr = time.perf_counter() - t
    t = time.perf_counter()
    W_svd, _, rank_svd, _ = scipy.linalg.lstsq(Phi, Y, lapack_driver="gelsd",
                                               check_finite=False)
    t_svd = time.perf_counter() - t
    return {"N": N, "n": Phi.shape[0], "seconds_min_norm_lstsq": t_qr, "method": method,
            "rank": rank, "seconds_gelsd": t_svd, "rank_gelsd": int(rank_svd),
            "speedup": t_svd / t_qr,
            "relative_difference": float(np.linalg.norm(W_qr - W_svd) / np.linalg.norm(W_svd)),
            "backward_error_min_norm_lstsq": backward_error(Phi, W_qr, Y),
            "backward_error_gelsd": backward_error(Phi, W_svd, Y)}


def table(doc: dict) -> str:
    lines = ["| N | min_norm_lstsq | road | gelsd | gelsd / ours | rel. difference | "
             "backward error (ours / gelsd) |", "|---|---|---|---|---|---|---|"]
    for r in doc["points"]:
        lines.append(f"| {r['N']:,} | {r['seconds_min_norm_lstsq']:.2f} s | "
                     f"{r['method'].split(':')[0]} | {r['seconds_gelsd']:.2f} s | "
                     f"{r['speedup']:.1f}x | {r['relative_difference']:.1e} | "
                     f"{r['backward_error_min_norm_lstsq']:.1e} / "
                     f"{r['backward_error_gelsd']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--n", type=int, default=10000, help="training points (the study's n)")
    ap.add_argument("--N", type=int, nargs="+", default=[2500, 5000, 9000],
                    help="feature counts, each below n")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    if any(N >= args.n for N in args.N):
        ap.error("every --N must be below --n (N >= n goes through the engine, not here)")
    study = DoubleDescentStudy(dataset=args.dataset, n_train=args.n, n_test=100,
                               n_features=tuple(args.N), seeds=(0,))
    # LAPACK's and the BLAS threads' first call, outside the timings
    min_norm_lstsq(np.eye(8, 4), np.ones((8, 1)))
    scipy.linalg.lstsq(np.eye(8, 4), np.ones((8, 1)), lapack_driver="gelsd")
    doc = {"dataset": args.dataset, "n": args.n, "machine": machine_label(), "points": []}
    for N in args.N:
        doc["points"].append(measure(study, N))
        r = doc["points"][-1]
        print(f"N = {N}: ours {r['seconds_min_norm_lstsq']:.2f} s ({r['method']}), gelsd "
              f"{r['seconds_gelsd']:.2f} s, rel. difference {r['relative_difference']:.1e}",
              flush=True)
    stem = Path(args.out) / f"bench_lstsq_{args.dataset}_n{args.n}_{machine_label()}"
    write_json_atomic(stem.with_suffix(".json"), doc)
    write_text_atomic(stem.with_suffix(".md"),
                      f"# Double descent's N < n least squares, {args.dataset} n = {args.n:,} "
                      f"({machine_label()})\n\n`python benchmarks/bench_lstsq.py --dataset "
                      f"{args.dataset} --n {args.n} --N {' '.join(map(str, args.N))}`; one "
                      f"process, the same Phi (the study's seed 0) for both.\n\n" + table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())

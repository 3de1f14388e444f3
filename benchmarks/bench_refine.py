"""Mixed precision on full MNIST: what float64 iterative refinement of a float32 factor reaches.

One fit of the exact interpolant (Gaussian, sigma 5, float32 K factored in
place, so memory stays float32) with ``Options(refine_steps=N)``: each step
computes the residual Y - K alpha in float64 against the stored K (its
float32 entries, read from the upper triangle the factor leaves intact) and
corrects alpha with the float32 factor (:mod:`kernelfit.solvers.refine`).
Reported: the relative residual before each step and after the last, the
test error and norm, the timings and the peak RSS.

    flock /tmp/kernelfit-heavy.lock python benchmarks/bench_refine.py   # ~10 min, 15 GB

Refinement converges while cond(K) eps_float32 < 1; where K is worse
conditioned the history shows it stalling, which is the finding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pcg import SIGMA, _data, machine, machine_slug  # noqa: E402

from kernelfit.atomic import write_json_atomic  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="training points (default: all)")
    ap.add_argument("--steps", type=int, default=4, help="refinement steps")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)

    from kernelfit import KernelInterpolantClassifier, Options
    from kernelfit.report import peak_rss_bytes

    m = machine()
    Xtr, ytr, Xte, yte = _data(args.n, None)
    clf = KernelInterpolantClassifier(sigma=SIGMA, options=Options(dtype="float32",
                                                                   refine_steps=args.steps))
    t = time.perf_counter()
    clf.fit(Xtr, ytr)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    test_error = float(np.mean(clf.predict(Xte) != yte))
    predict_s = time.perf_counter() - t
    info = clf.solver_info_
    doc = {"machine": m, "n": len(Xtr), "sigma": SIGMA, "dtype": "float32",
           "steps": args.steps,
           "command": "python benchmarks/bench_refine.py " + " ".join(argv or sys.argv[1:]),
           "relative_residual_before_each_step": info.get("refine_history"),
           "relative_residual_final": clf.relative_residual_,
           "residual_against": "the stored float32 K, products in float64",
           "converged": clf.converged_, "warnings": clf.warnings_,
           "test_error": test_error, "norm": clf.norm_, "fit_s": fit_s, "predict_s": predict_s,
           "timings": clf.timings_, "peak_rss": peak_rss_bytes(),
           "k_bytes": len(Xtr) ** 2 * 4}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_refine_{machine_slug(m)}.json"
    write_json_atomic(path, doc)
    print(f"residual before each step {doc['relative_residual_before_each_step']}, final "
          f"{doc['relative_residual_final']:.3e}; test error {100 * test_error:.2f}%, norm "
          f"{clf.norm_:.2f}; fit {fit_s:.0f} s; peak RSS {doc['peak_rss'] / 2**30:.1f} GiB")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`kernelfit bench solve`: the exact solve timed per stage, against the device's matmul peak."""

from __future__ import annotations

import argparse
import sys

from kernelfit.studies.bench import BACKENDS, D_MNIST, DTYPES, BenchConfig, markdown, run_bench

EXAMPLES = """\
examples:
  kernelfit bench solve --n 2000 5000 --backend numpy --dtype float32
  kernelfit bench solve --n 5000 10000 20000 --backend numpy torch cupy \\
      --dtype float32 float64 --out results/bench
  kernelfit bench solve --n 60000 --backend torch --device cuda --repeat 3

Each row is one KernelInterpolant fit of seeded Gaussian points (d = 784):
Gram, factor, solve and total seconds, the factor's GFLOP/s (n^3/3) and its
ratio to the same device's matmul peak measured in this run (TF32 off), and
the relative residual with the limit its dtype allows (INACCURATE above it).
Unavailable backends and sizes the planner refuses are skipped with the reason.
Writes OUT/bench_solve.json, OUT/bench_solve.md and OUT/bench_solve.png.
"""

BENCH_EXAMPLES = """\
examples:
  # a quick look: two small sizes, NumPy, float64
  kernelfit bench solve --n 500 1000 --backend numpy --dtype float64 --out results/bench-quick

  # every installed backend and both dtypes at the default sizes
  kernelfit bench solve --out results/bench

`kernelfit bench solve --help` shows its options and what each row measures.
"""


def register(sub) -> None:
    from kernelfit.cli import HelpFormatter

    p = sub.add_parser("bench", help="benchmarks of kernelfit on this machine",
                       description="Benchmarks of kernelfit's own code paths on this machine.",
                       epilog=BENCH_EXAMPLES, formatter_class=HelpFormatter)
    bsub = p.add_subparsers(dest="bench", metavar="BENCHMARK")
    s = bsub.add_parser(
        "solve", help="time Gram build, factor and solve of the n x n exact fit",
        description="Time the exact n x n fit per stage for each backend, dtype and n, "
                    "and compare the factorization's rate with the same device's matmul "
                    "peak, measured in the same run.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    # Values are checked by the library (typed InputError, exit status 2), not by
    # argparse choices, so a script calling BenchConfig gets the same message.
    s.add_argument("--n", type=int, nargs="+", default=[5000, 10000, 20000], metavar="N",
                   help="training-set sizes (each >= 2)")
    s.add_argument("--backend", nargs="+", default=list(BACKENDS), metavar="NAME",
                   help=f"backends to measure: {', '.join(BACKENDS)}; one that is not "
                        "installed or has no device is skipped with the reason")
    s.add_argument("--dtype", nargs="+", default=list(DTYPES), metavar="DTYPE",
                   help=f"precisions of K: {', '.join(DTYPES)}")
    s.add_argument("--d", type=int, default=D_MNIST, help="dimension of the synthetic points")
    s.add_argument("--device", default=None,
                   help="torch backend: cuda, cuda:N or cpu (default: CUDA when present)")
    s.add_argument("--repeat", type=int, default=1,
                   help="fits per point; the fastest whole fit is reported")
    s.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    s.add_argument("--peak-size", type=int, default=None, metavar="N",
                   help="side of the square matmul whose rate is the peak (default: 2048 on "
                        "a CPU, 8192 on a GPU)")
    s.add_argument("--out", default="results/bench",
                   help="directory of bench_solve.json/.md/.png and the per-point records")
    s.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True,
                   help="draw OUT/bench_solve.png (log-log time vs n, n^3 guide)")
    s.add_argument("--fresh", action="store_true",
                   help="measure every point again (default: reuse a point recorded with the "
                        "same settings on the same device)")
    s.add_argument("--quiet", action="store_true", help="no progress lines; the table is printed")
    s.set_defaults(func=main)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def main(args) -> int:
    from kernelfit.pipeline.outputs import check_outputs

    cfg = BenchConfig(sizes=args.n, backends=args.backend, dtypes=args.dtype, d=args.d,
                      repeat=args.repeat, seed=args.seed, device=args.device,
                      peak_size=args.peak_size)
    check_outputs(dirs={"--out": args.out})
    log = None if args.quiet else (lambda msg: print(f"kernelfit: {msg}", file=sys.stderr))
    doc = run_bench(cfg, args.out, plot=args.plot, fresh=args.fresh, log=log)
    print(markdown(doc))
    print(f"written {args.out}/bench_solve.json, {args.out}/bench_solve.md"
          + (f", {doc['png']}" if args.plot else ""))
    return 0

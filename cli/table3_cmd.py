"""`kernelfit table3`: reproduce the paper's Table 3 (resumable, row by row)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import write_text_atomic
from ..experiments.table3 import markdown, reproduce, rows
from ..options import Options


def register(sub) -> None:
    keys = [r.key for r in rows()]
    p = sub.add_parser(
        "table3", help="reproduce Table 3 of Zhang et al. (2017) and print paper vs measured",
        description="Run the exact-interpolation rows of the paper's Table 3 (MNIST and "
                    "CIFAR-10; raw, scattering/Gabor and random-conv-net features). Each "
                    "finished row is saved as JSON and reused, so an interrupted run "
                    "resumes. Full-size rows take tens of minutes each on 2 cores.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rows", nargs="+", choices=keys, default=None, metavar="ROW",
                   help=f"rows to run (default: all): {', '.join(keys)}")
    p.add_argument("--n-train", type=int, default=None, help="subset size (default: all)")
    p.add_argument("--n-test", type=int, default=None, help="test subset (default: all)")
    p.add_argument("--filters", type=int, default=4096, help="randconv filters (paper: 32000)")
    p.add_argument("--lam", type=float, default=1e-3, help="lambda of the l2 row")
    p.add_argument("--out", default="results/table3", help="where row records and the "
                   "Markdown table go")
    p.add_argument("--data-home", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=main)


def main(args) -> int:
    log = (lambda *_: None) if args.quiet else print
    results = reproduce(args.out, keys=args.rows, n_train=args.n_train, n_test=args.n_test,
                        filters=args.filters, lam=args.lam,
                        options=Options(progress=not args.quiet), data_home=args.data_home,
                        log=log)
    table = markdown(results)
    write_text_atomic(Path(args.out) / "table3.md", table)
    print(table, end="")
    return 0

"""`kernelfit expressivity`: the Theorem 1 network that fits any n labels with 2n + d weights."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
examples:
  # 1,000 MNIST images (pixels in [0, 1]) with random labels: exact fit in float64
  kernelfit expressivity --dataset mnist --n 1000 --plot

  # 500 standard-normal points in 20 dimensions
  kernelfit expressivity --n 500 --d 20

The network: f(z) = sum_j w_j max(<a, z> - b_j, 0), a a random unit vector
(d weights), one bias b_j between consecutive sorted projections (n) and the
output weights w (n) from the lower-triangular system A w = y,
A_ij = max(x_i - b_j, 0). The fit is checked by a forward pass on the
original points; min_i (x_i - b_i) is A's smallest eigenvalue. One JSON
record per run in --out; a rerun with the same settings reuses it.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "expressivity", help="build the depth-2 ReLU network (2n + d weights) that fits any "
                             "n labels, and verify the fit",
        description="Finite-sample expressivity (Zhang et al. 2017, Theorem 1): construct\n"
                    "the depth-2 ReLU network with 2n + d weights that interpolates n\n"
                    "distinct points, verify it forward, and report its conditioning.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="points (default: %(default)s)")
    p.add_argument("--d", type=int, default=None, help="dimension of synthetic points "
                   "(default 10); image datasets have their own")
    p.add_argument("--dataset", default="synthetic", help="synthetic (standard normal), "
                   "digits, mnist or cifar10 (default: %(default)s)")
    p.add_argument("--labels", default="random", choices=("random", "true"),
                   help="random classes (default) or the images' true labels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-8, help="largest residual that counts as "
                   "an exact fit (default: %(default)s)")
    p.add_argument("--data-home", default=None, help="dataset cache")
    p.add_argument("--out", default="results/expressivity", help="records (and the PNG) go "
                   "here")
    p.add_argument("--plot", action="store_true", help="draw the network along its projection "
                   "and the residuals as a PNG")
    p.add_argument("--quiet", action="store_true", help="no log lines")
    p.set_defaults(func=main)


def main(args) -> int:
    from kernelfit.pipeline.outputs import check_outputs
    from kernelfit.studies.expressivity import ExpressivityConfig, expressivity, plot, summary

    check_outputs(dirs={"--out": args.out}, datasets=[args.dataset], data_home=args.data_home)
    config = ExpressivityConfig(n=args.n, d=args.d, dataset=args.dataset, labels=args.labels,
                                seed=args.seed, tol=args.tol, data_home=args.data_home)
    log = (lambda *_: None) if args.quiet else print
    record = expressivity(config, args.out, log=log)
    print(summary(record), end="")
    if args.plot:
        print(f"figure: {plot(record, Path(args.out) / (record['name'] + '.png'))}")
    return 0

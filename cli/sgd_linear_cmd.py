"""`kernelfit sgd linear`: SGD on the linear model, beside the exact minimum-norm interpolant."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from kernelfit.cli.settings import BY_NAME
from kernelfit.engine.kernels import KERNELS
from kernelfit.errors import InputError
from kernelfit.pipeline.outputs import check_outputs

EPILOG = """\
examples:
  # kernel form, MNIST n = 2,000, Gaussian kernel (sigma 5): plain SGD and
  # EigenPro (top-160 eigen-directions preconditioned) side by side in one PNG
  kernelfit sgd linear --dataset mnist --n-train 2000 --sigma 5 --epochs 800 \\
      --batch-size 64 --precondition-rank 160 --compare-preconditioned --plot

  # primal form, linear kernel, d = 784 > n = 200: from 0 to lstsq's minimum-norm w*,
  # and from a random w0 to w* + P_null(w0) (a larger norm)
  kernelfit sgd linear --dataset mnist --n-train 200 --form primal --kernel linear \\
      --batch-size 1 --epochs 8000 --compare-init --plot
  # n = 500: X X^T has condition number 1.3e8, so plain SGD stalls; EigenPro on the
  # top 480 of 500 eigen-directions reaches 1e-3 in ~120 epochs
  kernelfit sgd linear --dataset mnist --n-train 500 --form primal --kernel linear \\
      --batch-size 50 --precondition-rank 480 --epochs 1000 --compare-preconditioned \\
      --compare-init --plot

  # random labels (the randomization tests of `kernelfit run`): epochs to fit them
  kernelfit sgd linear --dataset mnist --n-train 2000 --sigma 5 --epochs 400 \
      --randomize random-labels

Step size (--lr auto): 1 / L_b, L_b = min(lambda_1(K), max_i sum of the b largest
|K_ij| of row i) >= lambda_max(K_BB) for every batch B of b points, so every
step contracts ||alpha - alpha*||_K (with --precondition-rank k: the same bound
on K with its top-k eigenvalues flattened to lambda_{k+1}). Each run is one
JSON record in --out; a rerun with the same settings reuses it. "epochs to fit" is
the first epoch at which the training error (argmax of the outputs) is 0.
"""


def register(group) -> None:
    p = group.add_parser(
        "linear", help="SGD on the kernel/linear model vs the exact minimum-norm interpolant",
        description="Run mini-batch SGD on the square loss of the model the solver fits\n"
                    "(kernel form: alpha; primal form: w, linear kernel, d > n) and measure\n"
                    "per epoch its train/test error, loss, distance to the predicted limit\n"
                    "(the exact interpolant, or w* + P_null(w0) from a random start) and norm.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="digits", help="digits (embedded), mnist or cifar10; "
                   "pixels scaled to [0, 1] (default: %(default)s)")
    d.add_argument("--n-train", type=int, default=500, help="training points (default: "
                   "%(default)s)")
    d.add_argument("--n-test", type=int, default=None, help="test points (default: all)")
    d.add_argument("--data-home", default=None, help="dataset cache")
    # --randomize as `kernelfit run` declares it (cli/settings.py): one flag, one help text
    r = BY_NAME["randomize"]
    d.add_argument(*r.flags, dest=r.name, **r.kwargs)
    m = p.add_argument_group("model")
    m.add_argument("--form", default="kernel", choices=("kernel", "primal"),
                   help="kernel: coefficients alpha; primal: weights w (linear kernel, d > n)")
    m.add_argument("--kernel", default="gaussian", choices=KERNELS)
    m.add_argument("--sigma", type=float, default=None, help="bandwidth (default: 1 / (d Var "
                   "X) as gamma); the paper's MNIST setting is 5")
    s = p.add_argument_group("SGD")
    s.add_argument("--epochs", type=int, default=100, help="passes over the data (default: "
                   "%(default)s)")
    s.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    s.add_argument("--lr", default="auto", help="step size, or 'auto' for the provable "
                   "1 / L_b (default)")
    s.add_argument("--precondition-rank", type=int, default=0, metavar="K",
                   help="EigenPro: precondition the top-K eigen-directions of K (default: "
                   "0, plain SGD)")
    s.add_argument("--compare-preconditioned", action="store_true",
                   help="run plain SGD and the --precondition-rank K run on the same data, "
                        "both tracking the error split at K, and plot them together")
    s.add_argument("--init", default="zero", choices=("zero", "random"))
    s.add_argument("--compare-init", action="store_true",
                   help="run from zero and from a random start, and plot them together")
    s.add_argument("--init-scale", type=float, default=1.0, help="random init: N(0, s^2 / "
                   "dim) entries (default: %(default)s)")
    s.add_argument("--tol", type=float, default=1e-3, help="stop once ||theta - theta_lim|| / "
                   "||theta_lim|| <= tol; 0 runs every epoch (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu", help="cpu only: the loop is NumPy (per epoch a "
                   "few n x n products)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="results/sgd-linear", help="records (and the PNG) go here")
    o.add_argument("--plot", action="store_true", help="draw the per-epoch curves as a PNG")
    o.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    p.set_defaults(func=main)


def _lr(text: str):
    if text == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--lr takes a positive number or 'auto', got {text!r}") from None


def main(args) -> int:
    from kernelfit.pipeline.results import settings_key
    from kernelfit.studies.sgd.linear import SGDLinearConfig, sgd_linear
    from kernelfit.studies.sgd.linear_report import plot_runs, summary_table

    if args.device != "cpu":
        raise InputError(f"--device {args.device!r}: `sgd linear` runs in NumPy on the CPU "
                         "(pass --device cpu or leave it out)")
    config = SGDLinearConfig(
        dataset=args.dataset, n_train=args.n_train, n_test=args.n_test, seed=args.seed,
        kernel=args.kernel, sigma=args.sigma, form=args.form, epochs=args.epochs,
        batch_size=args.batch_size, lr=_lr(args.lr), precondition_rank=args.precondition_rank,
        init=args.init, init_scale=args.init_scale, tol=args.tol, randomize=args.randomize,
        data_home=args.data_home)
    configs = [config]
    if args.compare_preconditioned:
        if not args.precondition_rank:
            raise InputError("--compare-preconditioned needs --precondition-rank K > 0")
        configs = [replace(config, precondition_rank=0, split_rank=args.precondition_rank),
                   config]
    if args.compare_init:
        configs = [replace(c, init=init) for c in configs for init in ("zero", "random")]
    for c in configs:
        c.settings()        # validate every run before the first one starts
    check_outputs(dirs={"--out": args.out}, datasets=[args.dataset], data_home=args.data_home)
    log = (lambda *_: None) if args.quiet else print
    records = [sgd_linear(c, args.out, progress=not args.quiet, log=log) for c in configs]
    print(summary_table(records), end="")
    if args.plot:
        names = [r["name"] for r in records]
        # one figure per set of runs: the first run's name without its key, + the set's key
        stem = names[0] if len(names) == 1 else \
            f"compare-{names[0].rsplit('-', 1)[0]}-{settings_key({'runs': names}, 8)}"
        path = plot_runs(records, Path(args.out) / f"{stem}.png")
        print(f"figure: {path}")
    return 0

"""`kernelfit run`: one fit, one report."""

from __future__ import annotations

import argparse
import math
import re
import sys

from ..errors import InputError, KernelfitError
from ..experiments.run import RunConfig, fit_run
from ..kernels import KERNELS
from ..options import (
    BACKENDS,
    DTYPES,
    PRECONDITIONERS,
    REFINE_AGAINST,
    STORAGE_CHOICES,
    Options,
)
from ..plan import SOLVERS

EXAMPLES = """\
examples:
  kernelfit run                                   digits, Gaussian kernel, exact Cholesky
  kernelfit run --dataset mnist --n-train 10000 --sigma auto
  kernelfit run --dataset mnist --features scattering --json mnist.json
  kernelfit run --randomize random-labels --n-train 1000   fit random labels exactly
  kernelfit run --solver cg --max-iter 200 --strict        fail unless CG converges
  kernelfit run --dataset mnist --sigma 5 --dtype float32 --solver pcg --val-fraction 0.1
  kernelfit run --save-model digits.kfm && kernelfit predict --model digits.kfm
"""


# -- argument types: each rejects nonsense with a message argparse prints ------------------
def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _integer(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


positive_int = _integer(1)
nonnegative_int = _integer(0)


def positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _or_auto(parse):
    def wrapped(text: str):
        return "auto" if text.strip().lower() == "auto" else parse(text)
    wrapped.__name__ = f"{parse.__name__} or auto"
    return wrapped


def _fraction_or_zero(text: str) -> float:
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 0 and < 1, got {text}")
    return value


def fraction(text: str) -> float:
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "t": 1e12, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def byte_size(text: str) -> int:
    """'500MB', '2GiB', '1e9' -> bytes."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", text)
    unit = m and _UNITS.get(m.group(2).lower())
    if not m or unit is None:
        raise argparse.ArgumentTypeError(f"expected a size like 500MB, 2GiB or 1e9 (bytes), "
                                         f"got {text!r}")
    value = positive_float(m.group(1)) * unit
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, got {text!r}")
    return int(value)


def register(sub) -> None:
    from . import HelpFormatter

    p = sub.add_parser(
        "run", help="fit one kernel interpolant and print its report",
        description="Fit the minimum-norm kernel interpolant on a dataset and report train\n"
                    "error, test error, the interpolant's norm, the residual and timings.\n"
                    "Pixels are scaled to [0, 1] first (--preprocess).",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    add_run_arguments(p)
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="PATH", default=None, help="write the run record as JSON")
    o.add_argument("--save-model", metavar="PATH", default=None,
                   help="save the fitted model (estimator, feature map, preprocessing) for "
                        "`kernelfit predict`")
    o.add_argument("--quiet", action="store_true",
                   help="no progress bars or notices; the result table is still printed")
    p.set_defaults(func=main)


def add_run_arguments(p) -> None:
    """What a run is: data, features, kernel, solver and where it runs (run and plan share it)."""
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="digits",
                   help="digits (embedded), mnist, cifar10, or your own data as npz:PATH "
                        "(arrays X_train, y_train, X_test, y_test) or idx:DIR")
    d.add_argument("--n-train", type=positive_int, default=None, metavar="N",
                   help="training points, a stratified subset (default: all)")
    d.add_argument("--n-test", type=positive_int, default=None, metavar="N",
                   help="test points, a stratified subset (default: all)")
    d.add_argument("--randomize", default="none", metavar="TEST",
                   help="randomization test: none, labels:P, random-labels, shuffled-pixels, "
                        "random-pixels or gaussian")
    d.add_argument("--data-home", default=None, metavar="DIR",
                   help="dataset cache (default: $KERNELFIT_DATA or the user cache dir)")
    d.add_argument("--preprocess", default="scale", metavar="STEPS",
                   help="comma-separated steps: scale, crop:SIZE, whiten (per image), flatten")
    f = p.add_argument_group("features")
    f.add_argument("--features", default="raw", choices=("raw", "gabor", "scattering",
                                                         "randconv"),
                   help="image front end")
    f.add_argument("--filters", type=positive_int, default=None, metavar="N",
                   help="randconv: number of random filters (default: the front end's own)")
    f.add_argument("--feature-param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other front-end parameter (repeatable), e.g. J=2, patch=6")
    f.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="accumulate K from feature chunks without storing the features, "
                        "each feature standardized with training statistics (default: when "
                        "the features would exceed 2 GiB)")
    f.add_argument("--feature-cache", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse features cached on disk")
    k = p.add_argument_group("kernel")
    k.add_argument("--kernel", default="gaussian", choices=KERNELS, help="kernel function")
    k.add_argument("--sigma", type=_or_auto(positive_float), default=None,
                   help="bandwidth (gaussian: exp(-|x-y|^2 / (2 sigma^2))), or 'auto': chosen "
                        "on a validation split of the training set (default: from --gamma's "
                        "rule)")
    k.add_argument("--gamma", type=positive_float, default=None,
                   help="scale, instead of sigma (default: 1 / (d Var X))")
    k.add_argument("--degree", type=positive_int, default=3, help="polynomial degree")
    k.add_argument("--coef0", type=nonnegative_float, default=1.0, help="polynomial offset")
    s = p.add_argument_group("solver")
    s.add_argument("--lam", type=_or_auto(nonnegative_float), default=0.0,
                   help="ridge on the diagonal; 0 interpolates; 'auto': chosen on a "
                        "validation split of the training set")
    s.add_argument("--solver", default="cholesky", choices=SOLVERS,
                   help="cholesky: exact, in place; cg: preconditioned conjugate gradients "
                        "on the stored K; cg-matrix-free: CG without storing K; pcg: block "
                        "PCG on the stored K at one float32 pass per iteration, stopped by "
                        "--tol or early by --val-fraction")
    s.add_argument("--dtype", default=Options.dtype, choices=DTYPES,
                   help="precision of K; auto: float64 up to n = 20,000, float32 above")
    s.add_argument("--backend", default=Options.backend, choices=BACKENDS,
                   help="where K is built and factored (one engine on each): numpy: host "
                        "memory; torch: a PyTorch device; cupy: a CUDA device through CuPy; "
                        "auto: a GPU when present, else numpy")
    s.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="build and solve K on a Dask cluster (solver cholesky or cg): 'local' "
                        "starts one worker process per core on this machine, tcp://host:port "
                        "connects to a running scheduler (default: no Dask)")
    s.add_argument("--device", default=None,
                   help="cuda, cuda:1 or cpu (default: the backend's; CUDA when present)")
    s.add_argument("--storage", default=Options.storage, choices=STORAGE_CHOICES,
                   help="where a host K lives: memory, or disk (lower tiles in a file under "
                        "--scratch, factored out of core; a killed run resumes when run "
                        "again); auto: memory when it fits, else disk")
    s.add_argument("--scratch", default=None, metavar="DIR",
                   help="folder of K's tile files (default: scratch in kernelfit's cache)")
    s.add_argument("--device-memory", type=byte_size, default=None, metavar="SIZE",
                   help="device memory a GPU run may use, e.g. 20GB (default: what is free); "
                        "a K larger than that is streamed from host memory (--backend torch)")
    s.add_argument("--block-size", type=positive_int, default=Options.block_size, metavar="ROWS",
                   help="rows per Gram-builder panel")
    s.add_argument("--tile-size", type=positive_int, default=Options.tile_size, metavar="N",
                   help="Cholesky tile width (default: one LAPACK call while K is at most "
                        "1 GiB, else 6144)")
    s.add_argument("--n-jobs", type=positive_int, default=Options.n_jobs, metavar="N",
                   help="threads for the Gram builder")
    s.add_argument("--jitter", type=_or_auto(nonnegative_float), default=None,
                   help="added to K's diagonal, or 'auto' to retry a failed factorization "
                        "with growing jitter (default: none)")
    s.add_argument("--refine-steps", type=nonnegative_int, default=Options.refine_steps,
                   metavar="N", help="iterative-refinement steps after the direct solve")
    s.add_argument("--refine-against", default=Options.refine_against, choices=REFINE_AGAINST,
                   help="residuals of the refinement (and the reported one) against the "
                        "stored K ('stored', float32 when --dtype float32) or K recomputed "
                        "in float64 from the points ('exact': a float32 factor then gives "
                        "the float64 solution; about one float64 Gram pass per step); "
                        "default 'auto': exact when refining a Cholesky solve of points")
    s.add_argument("--tol", type=fraction, default=Options.tol,
                   help="CG stopping relative residual")
    s.add_argument("--max-iter", type=positive_int, default=Options.max_iter, metavar="N",
                   help="CG iterations at most")
    s.add_argument("--precond", default=Options.precond, choices=PRECONDITIONERS,
                   help="cg, cg-matrix-free, pcg: eigen (top eigenvectors of a Nyström "
                        "sketch of K), jacobi, none")
    s.add_argument("--precond-rank", type=positive_int, default=None, metavar="N",
                   help="eigen: eigenvectors kept (default: from memory and the "
                        "spectrum's decay)")
    s.add_argument("--val-fraction", type=_fraction_or_zero, default=Options.val_fraction,
                   metavar="F", help="pcg: hold out this fraction of the training set, "
                                     "find the iteration t* with the lowest error on it, then "
                                     "refit on the whole training set for t* iterations "
                                     "(0: stop on --tol)")
    s.add_argument("--patience", type=positive_int, default=Options.patience, metavar="N",
                   help="pcg early stopping: iterations without a better validation error")
    s.add_argument("--val-min-iter", type=nonnegative_int, default=Options.val_min_iter,
                   metavar="N", help="pcg early stopping: iterations run before it may stop")
    s.add_argument("--memory-limit", type=byte_size, default=None, metavar="SIZE",
                   help="memory the run may plan for, e.g. 8GB (default: 90%% of free RAM)")
    s.add_argument("--strict", action="store_true",
                   help="fail (exit status 2) when the solve is less exact than its dtype "
                        "allows or CG stops short of --tol, instead of warning")
    d.add_argument("--seed", type=nonnegative_int, default=0,
                   help="picks the subsets, random features and randomization tests")


def _literal(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def feature_params(args) -> dict:
    params = {"n_filters": args.filters} if args.filters else {}
    for item in args.feature_param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--feature-param takes KEY=VALUE, got {item!r}")
        params[key.strip()] = _literal(value.strip())
    return params


def notice(message: str) -> None:
    print(f"kernelfit: {message}", file=sys.stderr)


def check_outputs(*paths) -> None:
    """Refuse unwritable output paths now, before the work (a directory, a device, no access)."""
    from ..atomic import check_writable

    for path in paths:
        if path:
            check_writable(path)


def write_outputs(writers) -> int:
    """Run each ``(what, path, write)``; report each failure; 2 if any failed, else 0."""
    status = 0
    for what, path, write in writers:
        if not path:
            continue
        try:
            write(path)
        except (KernelfitError, OSError) as err:
            print(f"kernelfit: error: the {what} could not be written to {path}: {err}",
                  file=sys.stderr)
            status = 2
            continue
        print(f"{what} written to {path}")
    return status


def main(args) -> int:
    from ..experiments.saved_model import STREAMED_REFUSAL, save_model

    if args.save_model and args.stream:
        raise InputError(STREAMED_REFUSAL)
    check_outputs(args.json, args.save_model)
    fitted = fit_run(config_from_args(args), log=None if args.quiet else notice,
                     refuse_streamed=bool(args.save_model))
    record = fitted.record
    # The table first: whatever happens to the files, the result is on the screen.
    print(record.table())
    return write_outputs([("record", args.json, record.write_json),
                          ("model", args.save_model, lambda p: save_model(p, fitted))])


def config_from_args(args) -> RunConfig:
    """The RunConfig (and its Options) that the run arguments describe."""
    if args.device not in (None, "cpu") and args.backend == "numpy":
        raise InputError(f"--device {args.device} is a GPU, and --backend numpy runs in host "
                         "memory; use --backend torch, cupy or auto, or drop --device")
    options = Options(dtype=args.dtype, block_size=args.block_size, tile_size=args.tile_size,
                      n_jobs=args.n_jobs, jitter=args.jitter,
                      refine_steps=args.refine_steps, refine_against=args.refine_against,
                      tol=args.tol, max_iter=args.max_iter,
                      precond=args.precond, precond_rank=args.precond_rank,
                      val_fraction=args.val_fraction, patience=args.patience,
                      val_min_iter=args.val_min_iter,
                      memory_limit=args.memory_limit, device_memory=args.device_memory,
                      storage=args.storage, scratch_dir=args.scratch,
                      backend=args.backend,
                      device=args.device, progress=not args.quiet, strict=args.strict,
                      scheduler=args.scheduler)
    return RunConfig(dataset=args.dataset, n_train=args.n_train, n_test=args.n_test,
                       seed=args.seed, kernel=args.kernel, gamma=args.gamma, sigma=args.sigma,
                       degree=args.degree, coef0=args.coef0, lam=args.lam, solver=args.solver,
                       preprocessing=args.preprocess, features=args.features,
                       feature_params=feature_params(args), stream=args.stream,
                       feature_cache=args.feature_cache, randomize=args.randomize,
                       data_home=args.data_home, options=options)

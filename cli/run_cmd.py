"""`kernelfit run`: one fit, one report."""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..experiments.run import RunConfig, run
from ..kernels import KERNELS
from ..options import Options
from ..plan import SOLVERS


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="fit one kernel interpolant and print its report",
        description="Fit the minimum-norm kernel interpolant on a dataset and report train "
                    "error, test error, the interpolant's norm, the residual and timings.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="digits", help="digits (embedded), mnist or cifar10")
    d.add_argument("--n-train", type=int, default=None, help="training points (stratified "
                   "subset; default: all)")
    d.add_argument("--n-test", type=int, default=None, help="test points (default: all)")
    d.add_argument("--randomize", default="none",
                   help="labels:P | random-labels | shuffled-pixels | random-pixels | gaussian")
    d.add_argument("--data-home", default=None, help="dataset cache (default: $KERNELFIT_DATA "
                   "or the user cache dir)")
    d.add_argument("--preprocess", default="scale", help="comma-separated steps: scale, "
                   "crop:SIZE, whiten (per image), flatten")
    f = p.add_argument_group("features")
    f.add_argument("--features", default="raw", help="raw | gabor | scattering | randconv")
    f.add_argument("--filters", type=int, default=None, help="randconv: number of random filters")
    f.add_argument("--feature-param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other front-end parameter (repeatable), e.g. J=2, patch=6")
    f.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="accumulate K from feature chunks without storing the features, "
                        "each feature standardized with training statistics (default: when "
                        "the features would exceed 2 GiB)")
    f.add_argument("--feature-cache", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse features cached on disk")
    k = p.add_argument_group("kernel")
    k.add_argument("--kernel", default="gaussian", choices=KERNELS)
    k.add_argument("--sigma", type=float, default=None, help="bandwidth (gaussian: "
                   "exp(-|x-y|^2 / (2 sigma^2)))")
    k.add_argument("--gamma", type=float, default=None, help="scale, instead of sigma "
                   "(default: 1 / (d Var X))")
    k.add_argument("--degree", type=int, default=3, help="polynomial degree")
    k.add_argument("--coef0", type=float, default=1.0, help="polynomial offset")
    s = p.add_argument_group("solver")
    s.add_argument("--lam", type=float, default=0.0, help="ridge on the diagonal; 0 interpolates")
    s.add_argument("--solver", default="cholesky", choices=SOLVERS)
    s.add_argument("--dtype", default=Options.dtype, choices=("float32", "float64"))
    s.add_argument("--backend", default=Options.backend, choices=("numpy", "torch"),
                   help="numpy: host memory, in-place tiled Cholesky; torch: K and its "
                        "factor on one PyTorch device (cuSOLVER on a GPU)")
    s.add_argument("--device", default=None, help="torch backend: cuda, cuda:1, cpu "
                   "(default: CUDA when present)")
    s.add_argument("--block-size", type=int, default=Options.block_size)
    s.add_argument("--tile-size", type=int, default=Options.tile_size,
                   help="Cholesky tile width (default: one LAPACK call while n^2 < 2^31, "
                        "else 6144)")
    s.add_argument("--n-jobs", type=int, default=Options.n_jobs)
    s.add_argument("--jitter", default=None, help="number, or 'auto' to retry a failed "
                   "factorization with growing diagonal jitter")
    s.add_argument("--refine-steps", type=int, default=Options.refine_steps)
    s.add_argument("--tol", type=float, default=Options.tol, help="CG relative residual")
    s.add_argument("--max-iter", type=int, default=Options.max_iter, help="CG iterations")
    o = p.add_argument_group("output")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--json", metavar="PATH", default=None, help="write the run record as JSON")
    o.add_argument("--quiet", action="store_true", help="no progress bars, no table")
    p.set_defaults(func=main)


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


def _jitter(value):
    if value is None or value == "auto":
        return value
    return float(value)


def main(args) -> int:
    options = Options(dtype=args.dtype, block_size=args.block_size, tile_size=args.tile_size,
                      n_jobs=args.n_jobs, jitter=_jitter(args.jitter),
                      refine_steps=args.refine_steps, tol=args.tol, max_iter=args.max_iter,
                      backend=args.backend, device=args.device, progress=not args.quiet)
    config = RunConfig(dataset=args.dataset, n_train=args.n_train, n_test=args.n_test,
                       seed=args.seed, kernel=args.kernel, gamma=args.gamma, sigma=args.sigma,
                       degree=args.degree, coef0=args.coef0, lam=args.lam, solver=args.solver,
                       preprocessing=args.preprocess, features=args.features,
                       feature_params=feature_params(args), stream=args.stream,
                       feature_cache=args.feature_cache, randomize=args.randomize,
                       data_home=args.data_home, options=options)
    record = run(config)
    if args.json:
        record.write_json(args.json)
    if not args.quiet:
        print(record.table())
        if args.json:
            print(f"record written to {args.json}")
    return 0

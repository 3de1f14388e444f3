"""The one mapping between command-line options and run settings.

Every setting a command takes is declared here once, named after the field
it sets (``--n-train`` sets ``RunConfig.n_train``, ``--memory-limit`` sets
``Options.memory_limit``; argparse's ``dest`` is the field's name), with its
type, default and help. A command adds the settings it takes
(:func:`add_settings`) and reads them back with :func:`run_config` /
:func:`options`, which copy every declared setting the parser registered
into its field: no option is mapped by hand, so none can be dropped on the
way, and an option a command does not take is one argparse refuses.

Four settings are spelled otherwise on the command line, each named once
below: ``--quiet`` (``Options.progress`` negated), ``--filters``,
``--n-features`` and ``--feature-param KEY=VALUE`` (entries of
``RunConfig.feature_params``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields

from kernelfit.cli.argtypes import (
    bounded_int,
    byte_size,
    fraction,
    fraction_or_zero,
    nonnegative_float,
    nonnegative_int,
    or_auto,
    positive_float,
    positive_int,
)
from kernelfit.engine.kernels import KERNELS
from kernelfit.engine.network_kernels import DEFAULT_WEIGHT_STD
from kernelfit.engine.plan import SOLVERS
from kernelfit.errors import InputError
from kernelfit.options import (
    BACKENDS,
    DTYPES,
    MAX_REFINE_STEPS,
    PRECONDITIONERS,
    REFINE_AGAINST,
    STORAGE_CHOICES,
    Options,
)
from kernelfit.pipeline.run import RunConfig


@dataclass(frozen=True)
class Setting:
    """One setting: the field it sets, its group in ``--help``, argparse's keywords."""

    name: str
    group: str
    kwargs: dict = field(default_factory=dict)
    aliases: tuple = ()        # older spellings still accepted

    @property
    def flags(self) -> tuple:
        return (f"--{self.name.replace('_', '-')}", *self.aliases)


def _features():
    from kernelfit.features import FEATURES
    return FEATURES


SETTINGS = (
    # -- data (RunConfig) ------------------------------------------------------------
    Setting("dataset", "data", dict(
        default="digits", help="digits (embedded), mnist, cifar10, or your own data as "
        "npz:PATH (arrays X_train, y_train, X_test, y_test) or idx:DIR")),
    Setting("n_train", "data", dict(type=positive_int, default=None, metavar="N",
                                    help="training points, a stratified subset (default: all)")),
    Setting("n_test", "data", dict(type=positive_int, default=None, metavar="N",
                                   help="test points, a stratified subset (default: all)")),
    Setting("seed", "data", dict(type=nonnegative_int, default=0,
                                 help="picks the subsets, random features and randomization "
                                      "tests")),
    Setting("randomize", "data", dict(
        default="none", metavar="TEST", help="randomization test: none, labels:P, "
        "random-labels, shuffled-pixels, random-pixels or gaussian")),
    Setting("data_home", "data", dict(default=None, metavar="DIR",
                                      help="dataset cache (default: $KERNELFIT_DATA or the "
                                           "user cache dir)")),
    Setting("preprocessing", "data", dict(
        default="scale", metavar="STEPS", help="comma-separated steps: scale, crop:SIZE, "
        "whiten (per image), flatten"), aliases=("--preprocess",)),
    # -- features (RunConfig) --------------------------------------------------------
    Setting("features", "features", dict(default="raw", choices=None, help="image front end")),
    Setting("stream", "features", dict(
        action=argparse.BooleanOptionalAction, default=None,
        help="accumulate K from feature chunks without storing the features (front ends "
             "whose features come in column chunks: randconv, each feature standardized with "
             "training statistics; rff, as they are; default: when the features would exceed "
             "2 GiB)")),
    Setting("feature_cache", "features", dict(action=argparse.BooleanOptionalAction,
                                              default=True,
                                              help="reuse features cached on disk")),
    # -- kernel (RunConfig) ----------------------------------------------------------
    Setting("kernel", "kernel", dict(default="gaussian", choices=KERNELS,
                                     help="kernel function")),
    Setting("sigma", "kernel", dict(
        type=or_auto(positive_float), default=None,
        help="bandwidth (gaussian: exp(-|x-y|^2 / (2 sigma^2))), or 'auto': chosen on a "
             "validation split of the training set (default: from --gamma's rule)")),
    Setting("gamma", "kernel", dict(type=positive_float, default=None,
                                    help="scale, instead of sigma (default: 1 / (d Var X))")),
    Setting("degree", "kernel", dict(type=positive_int, default=3, help="polynomial degree")),
    Setting("coef0", "kernel", dict(type=nonnegative_float, default=1.0,
                                    help="polynomial offset")),
    Setting("depth", "kernel", dict(type=nonnegative_int, default=1, metavar="L",
                                    help="nngp, ntk: hidden ReLU layers of the fully connected "
                                         "network (0: the scaled linear kernel)")),
    Setting("weight_std", "kernel", dict(type=positive_float, default=DEFAULT_WEIGHT_STD,
                                         metavar="SW", help="nngp, ntk: weight std of every "
                                         "Dense layer (neural-tangents' W_std; default sqrt 2)")),
    Setting("bias_std", "kernel", dict(type=nonnegative_float, default=0.0, metavar="SB",
                                       help="nngp, ntk: bias std of every Dense layer (b_std)")),
    # -- solver (RunConfig) ----------------------------------------------------------
    Setting("lam", "solver", dict(type=or_auto(nonnegative_float), default=0.0,
                                  help="ridge on the diagonal; 0 interpolates; 'auto': chosen "
                                       "on a validation split of the training set")),
    Setting("solver", "solver", dict(
        default="cholesky", choices=SOLVERS,
        help="cholesky: exact, in place; cg: preconditioned conjugate gradients on the stored "
             "K; cg-matrix-free: CG without storing K; pcg: block PCG on the stored K at one "
             "float32 pass per iteration, stopped by --tol or early by --val-fraction")),
    # -- solver (Options) ------------------------------------------------------------
    Setting("dtype", "solver", dict(default=Options.dtype, choices=DTYPES,
                                    help="precision of K; auto: float64 up to n = 20,000, "
                                         "float32 above")),
    Setting("backend", "solver", dict(
        default=Options.backend, choices=BACKENDS,
        help="where K is built and factored (one engine on each): numpy: host memory; torch: "
             "a PyTorch device; cupy: a CUDA device through CuPy; auto: a GPU when present "
             "(for the exact solve), else numpy")),
    Setting("scheduler", "solver", dict(
        default=None, metavar="ADDRESS",
        help="build and solve K on a Dask cluster (solver cholesky or cg): 'local' starts one "
             "worker process per core on this machine, tcp://host:port connects to a running "
             "scheduler (default: no Dask)")),
    Setting("device", "solver", dict(default=None, help="cuda, cuda:1 or cpu (default: the "
                                                        "backend's; CUDA when present)")),
    Setting("storage", "solver", dict(
        default=Options.storage, choices=STORAGE_CHOICES,
        help="where a host K lives: memory, or disk (lower tiles in a file under "
             "--scratch-dir, factored out of core; a killed run resumes when run again); "
             "auto: memory when it fits, else disk")),
    Setting("scratch_dir", "solver", dict(default=None, metavar="DIR",
                                          help="folder of K's tile files (default: scratch in "
                                               "kernelfit's cache); one run at a time per "
                                               "folder, a second is refused"),
            aliases=("--scratch",)),
    Setting("keep_scratch", "solver", dict(
        action="store_true", help="keep K's tile files after a successful run (default: "
                                  "deleted; a failed or killed run keeps them to resume)")),
    Setting("device_memory", "solver", dict(
        type=byte_size, default=None, metavar="SIZE",
        help="device memory a GPU run may use, e.g. 20GB (default: what is free); a K larger "
             "than that is streamed from host memory (--backend torch)")),
    Setting("block_size", "solver", dict(type=positive_int, default=Options.block_size,
                                         metavar="ROWS", help="rows per Gram-builder panel")),
    Setting("tile_size", "solver", dict(
        type=positive_int, default=Options.tile_size, metavar="N",
        help="Cholesky tile width (default: one LAPACK call while K is at most 1 GiB, "
             "else 6144)")),
    Setting("n_jobs", "solver", dict(type=positive_int, default=Options.n_jobs, metavar="N",
                                     help="threads for the Gram builder")),
    Setting("jitter", "solver", dict(
        type=or_auto(nonnegative_float), default=None,
        help="added to K's diagonal, or 'auto' to retry a failed factorization with growing "
             "jitter (default: none)")),
    Setting("refine_steps", "solver", dict(
        type=bounded_int(0, MAX_REFINE_STEPS), default=Options.refine_steps, metavar="N",
        help=f"iterative-refinement steps after the direct solve, at most {MAX_REFINE_STEPS}; "
             "it stops earlier once a step no longer halves the residual")),
    Setting("refine_against", "solver", dict(
        default=Options.refine_against, choices=REFINE_AGAINST,
        help="residuals of the refinement (and the reported one) against the stored K "
             "('stored', float32 when --dtype float32) or K recomputed in float64 from the "
             "points ('exact': a float32 factor then gives the float64 solution; about one "
             "float64 Gram pass per step); default 'auto': exact when refining a Cholesky "
             "solve of points")),
    Setting("tol", "solver", dict(type=fraction, default=Options.tol,
                                  help="CG stopping relative residual")),
    Setting("max_iter", "solver", dict(type=positive_int, default=Options.max_iter,
                                       metavar="N", help="CG iterations at most")),
    Setting("precond", "solver", dict(default=Options.precond, choices=PRECONDITIONERS,
                                      help="cg, cg-matrix-free, pcg: eigen (top eigenvectors "
                                           "of a Nyström sketch of K), jacobi, none")),
    Setting("precond_rank", "solver", dict(type=positive_int, default=None, metavar="N",
                                           help="eigen: eigenvectors kept (default: from "
                                                "memory and the spectrum's decay)")),
    Setting("val_fraction", "solver", dict(
        type=fraction_or_zero, default=Options.val_fraction, metavar="F",
        help="pcg: hold out this fraction of the training set, find the iteration t* with the "
             "lowest error on it, then refit on the whole training set for t* iterations "
             "(0: stop on --tol)")),
    Setting("patience", "solver", dict(type=positive_int, default=Options.patience,
                                       metavar="N", help="pcg early stopping: iterations "
                                                         "without a better validation error")),
    Setting("val_min_iter", "solver", dict(type=nonnegative_int, default=Options.val_min_iter,
                                           metavar="N", help="pcg early stopping: iterations "
                                                             "run before it may stop")),
    Setting("memory_limit", "solver", dict(
        type=byte_size, default=None, metavar="SIZE",
        help="memory the run may plan for, e.g. 8GB, at most this machine's physical memory "
             "(default: 90%% of free RAM; --force to plan for a larger machine)")),
    Setting("strict", "solver", dict(
        action="store_true", help="fail (exit status 2) when the solve is less exact than its "
                                  "dtype allows or CG stops short of --tol, instead of "
                                  "warning")),
)

BY_NAME = {s.name: s for s in SETTINGS}
RUN_FIELDS = frozenset(f.name for f in fields(RunConfig)) - {"options", "feature_params"}
OPTION_FIELDS = frozenset(f.name for f in fields(Options))
#: Every declared setting of a run, in help order: what `kernelfit run` takes.
RUN_SETTINGS = tuple(s.name for s in SETTINGS)
#: The solver options alone (Options fields): what a study adds for its fits.
OPTION_SETTINGS = tuple(s.name for s in SETTINGS if s.name in OPTION_FIELDS)
#: The three settings with a spelling of their own (see the module docstring).
FEATURE_PARAM_FLAGS = ("filters", "n_features", "feature_param")


def add_settings(parser, names=RUN_SETTINGS, *, feature_params: bool = False,
                 quiet: bool = False, **overrides) -> None:
    """Add the settings ``names`` to ``parser``, grouped as ``kernelfit run --help`` groups them.

    ``feature_params``: also ``--filters`` and ``--feature-param``. ``quiet``:
    also ``--quiet`` (progress off). ``overrides``: per-setting argparse
    keywords (``dataset=dict(default=None, help=...)`` where a command means
    something else by the default).
    """
    groups = {}

    def group(title):
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        return groups[title]

    for name in names:
        s = BY_NAME[name]
        kwargs = {**s.kwargs, **overrides.get(name, {})}
        if name == "features" and kwargs.get("choices", ()) is None:
            kwargs["choices"] = _features()
        group(s.group).add_argument(*s.flags, dest=name, **kwargs)
        if name == "memory_limit":
            group(s.group).add_argument(
                "--force", action="store_true",
                help="accept a --memory-limit above this machine's physical memory (to plan a "
                     "run meant for a larger machine)")
        if name == "features" and feature_params:
            g = group("features")
            g.add_argument("--filters", type=positive_int, default=None, metavar="N",
                           help="randconv: number of random filters (default: the front "
                                "end's own)")
            g.add_argument("--n-features", type=positive_int, default=None, metavar="N",
                           help="rff: number of random Fourier features (default: the front "
                                "end's own)")
            g.add_argument("--feature-param", action="append", default=[], metavar="KEY=VALUE",
                           help="any other front-end parameter (repeatable), e.g. J=2 "
                                "(scattering), patch_size=6 (randconv)")
    if quiet:
        parser.add_argument("--quiet", action="store_true",
                            help="no progress bars or notices; results are still printed")
    # What this parser took from the table: the only arguments run_config / options read.
    taken = (parser.get_default(_TAKEN) or ()) + tuple(names)
    parser.set_defaults(**{_TAKEN: taken + ("feature_params",) * feature_params
                           + ("quiet",) * quiet})


_TAKEN = "settings_taken"


def _taken(args, fields_: frozenset) -> dict:
    taken = set(getattr(args, _TAKEN, ()))
    return {k: getattr(args, k) for k in fields_ & taken}


def options(args, **fixed) -> Options:
    """The :class:`Options` of every option setting the parser registered (``fixed`` wins)."""
    given = _taken(args, OPTION_FIELDS)
    if "quiet" in vars(args):         # every command's --quiet turns progress off
        given["progress"] = not args.quiet
    if "memory_limit" in given:
        from kernelfit.pipeline.run_plan import check_memory_limit
        check_memory_limit(given["memory_limit"], force=args.force)
    return Options(**{**given, **fixed})


def run_config(args, **fixed) -> RunConfig:
    """The :class:`RunConfig` (and its Options) of every setting the parser registered."""
    given = _taken(args, RUN_FIELDS)
    if "feature_params" in getattr(args, _TAKEN, ()):
        given["feature_params"] = feature_params(args)
    opts = fixed.pop("options", None) or options(args)
    return RunConfig(**{**given, **fixed}, options=opts)


def _literal(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def feature_params(args) -> dict:
    """``--filters N`` and every ``--feature-param KEY=VALUE``, as the front end's parameters."""
    params = {"n_filters": args.filters} if getattr(args, "filters", None) else {}
    if getattr(args, "n_features", None):
        params["n_features"] = args.n_features
    for item in args.feature_param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--feature-param takes KEY=VALUE, got {item!r}")
        params[key.strip()] = _literal(value.strip())
    return params

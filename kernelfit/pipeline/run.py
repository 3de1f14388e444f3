"""One run, end to end: data -> randomization -> preprocessing -> features -> K -> solve -> record.

Two roads from features to K. The usual one materializes the (cached) feature
matrices and lets the estimator build K blockwise. Front ends whose features
come in column chunks (randconv's filter groups) can instead be *streamed*:
K += Phi_c Phi_c^T chunk by chunk, so that the n x 8F feature matrix of a
32,000-filter network never exists; the estimator then takes K precomputed.

Either road is planned before anything large is allocated
(:mod:`.run_plan`): K, k(test, train) or the test features, the feature
matrices (or one streamed chunk) and the prediction temporaries are counted
together, so a request that cannot fit is refused in seconds instead of being
found by the OOM killer.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from kernelfit.engine.kernels import check_scale, make_kernel
from kernelfit.engine.network_kernels import DEFAULT_WEIGHT_STD
from kernelfit.engine.sizes import STREAM_ABOVE_BYTES, STREAM_CHUNK_UNITS
from kernelfit.errors import AccuracyError, AccuracyWarning, InputError
from kernelfit.model import KernelInterpolantClassifier
from kernelfit.options import Options
from kernelfit.pipeline.report import RunRecord, peak_rss_bytes, stage
from kernelfit.pipeline.run_plan import plan_run, plan_selection

#: Why a run that saves its model cannot stream K.
STREAMED_REFUSAL = ("--save-model needs the training features to predict new images, and a "
                    "streamed K never holds them; add --no-stream (the features are then kept "
                    "in memory) or drop --save-model")


@dataclass
class RunConfig:
    """What a run needs; every field has the default `kernelfit run` uses.

    ``sigma`` and ``lam`` also take ``"auto"``: chosen by
    :func:`kernelfit.pipeline.select.select` on a validation split carved
    from the training set (never the test set) before the final fit.
    """

    dataset: str = "digits"
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0
    kernel: str = "gaussian"
    gamma: float | None = None
    sigma: float | str | None = None
    degree: int = 3
    coef0: float = 1.0
    depth: int = 1                          # nngp / ntk: hidden ReLU layers
    weight_std: float = DEFAULT_WEIGHT_STD  # nngp / ntk: the Dense layers' sw
    bias_std: float = 0.0                   # nngp / ntk: the Dense layers' sb
    lam: float | str = 0.0
    solver: str = "cholesky"
    preprocessing: str = "scale"
    features: str = "raw"
    feature_params: dict = field(default_factory=dict)
    stream: bool | None = None      # None: stream when the features are large and chunked
    feature_cache: bool = True
    randomize: str = "none"
    data_home: str | None = None
    options: Options = field(default_factory=Options)


@dataclass
class Prepared:
    """Images after randomization and preprocessing, labels, and what the record says of them."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    preprocessing: list
    randomization: str
    seconds: float
    # The randomization as far as it changed the images ("none" for label tests):
    # what the feature cache is keyed by, so label-corruption levels share features.
    image_randomization: str = "none"
    notes: list = field(default_factory=list)     # e.g. a subset that lacks classes


@dataclass
class FittedRun:
    """A finished run: its record, and what predicting new images needs.

    On the in-memory road ``estimator`` predicts from ``feature_map``'s
    features of new images. A streamed run's estimator takes a precomputed
    k(test, train) instead, which new images cannot supply without all the
    training features (``streamed`` is then True).
    """

    record: RunRecord
    estimator: KernelInterpolantClassifier
    feature_map: object
    config: RunConfig
    streamed: bool = False


def prepare(config: RunConfig, *, asked=("train", "test")) -> Prepared:
    """Load the split, apply the randomization test, then the preprocessing steps.

    ``asked`` names the splits whose size the user asked for: a subset of
    those that lacks some classes is warned about and noted in the run. A
    subset a caller takes for its own use (``n_test=1`` where the test split
    is never read) is not: the user asked for no such subset.
    """
    from kernelfit.data import load_split
    from kernelfit.data.dataset import missing_classes
    from kernelfit.data.preprocess import Preprocessing
    from kernelfit.data.randomize import parse_randomization

    t = time.perf_counter()
    rand = parse_randomization(config.randomize)
    pre = Preprocessing.parse(config.preprocessing)
    train, test = load_split(config.dataset, n_train=config.n_train, n_test=config.n_test,
                             seed=config.seed, data_home=config.data_home,
                             progress=config.options.progress, warn_missing=asked)
    notes = [p for split, ds in (("train", train), ("test", test)) if split in asked
             and (p := missing_classes(ds))]
    train, test = rand.apply(train, test, seed=config.seed)
    return Prepared(pre.apply(train.images, train.max_value), train.labels,
                    pre.apply(test.images, test.max_value), test.labels,
                    pre.describe(), rand.describe(), time.perf_counter() - t,
                    "none" if rand.kind == "labels" else rand.describe(), notes)


def should_stream(config: RunConfig, fmap, n: int, dim: int | None = None) -> bool:
    """Whether K comes from the front end's column chunks (``config.stream``, or by size).

    ``dim``: the feature dimension, for a map not fitted yet (default ``fmap.dim``).
    """
    if config.stream is not None:
        if config.stream and not fmap.streamable:
            raise InputError(f"the {fmap.name} front end cannot be streamed (its features do "
                             "not come in column chunks; randconv's do): drop --stream")
        return config.stream
    dim = fmap.dim if dim is None else dim
    return fmap.streamable and n * dim * 4 > STREAM_ABOVE_BYTES


def featurize(config: RunConfig, fmap, data: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Train and test features of the prepared images, through the feature cache."""
    # Raw pixels are a copy, done before a bar could say anything useful.
    progress = config.options.progress and fmap.name != "raw"
    # Raw pixels cost less to recompute than to read back: never cached.
    if not config.feature_cache or fmap.name == "raw":
        return (fmap.transform(data.train_images, progress=progress),
                fmap.transform(data.test_images, progress=progress))
    from kernelfit.data.fingerprint import data_fingerprint
    from kernelfit.features.cache import cached_transform, default_cache_dir
    # The features live beside the data they came from: a run with --data-home must
    # neither read nor fill the default root's feature cache.
    folder = default_cache_dir(config.data_home)
    key = dict(dataset=config.dataset, data=data_fingerprint(config.dataset, config.data_home),
               seed=config.seed, preprocessing=data.preprocessing,
               randomization=data.image_randomization, data_home=config.data_home)
    return (cached_transform(fmap, data.train_images, key={**key, "split": "train"},
                             cache_dir=folder, progress=progress),
            cached_transform(fmap, data.test_images, key={**key, "split": "test"},
                             cache_dir=folder, progress=progress))


def _stream_kernel(config: RunConfig, fmap):
    # The default scale of standardized features (variance 1): the feature matrix is
    # never held, so the rule takes its dimension.
    return make_kernel(config.kernel, gamma=config.gamma, sigma=config.sigma,
                       degree=config.degree, coef0=config.coef0, dim=fmap.dim,
                       **network_params(config))


def _kernel_params(config: RunConfig) -> dict:
    """What make_kernel takes from the run besides the scale (nngp / ntk only)."""
    from kernelfit.engine.kernels import NETWORK_KERNELS
    return network_params(config) if config.kernel in NETWORK_KERNELS else {}


def network_params(config: RunConfig) -> dict:
    """depth, weight_std, bias_std: what the nngp / ntk kernels take from a run's settings."""
    return dict(depth=config.depth, weight_std=config.weight_std, bias_std=config.bias_std)


def _streamed_gram(config: RunConfig, fmap, data: Prepared, kernel, options: Options):
    """K (n x n) and k(test, train) accumulated from the front end's column chunks."""
    from kernelfit.engine.gram.stream import build_gram_streamed

    chunks = fmap.iter_column_chunks(data.train_images, data.test_images, STREAM_CHUNK_UNITS,
                                     progress=options.progress)
    return build_gram_streamed(chunks, len(data.train_images), len(data.test_images),
                               kernel, options=options,
                               standardize=fmap.stream_standardize,
                               dtype=options.dtype)


def auto_grid(config: RunConfig, X) -> dict:
    """The grid of every "auto" hyper-parameter; the fixed ones as single values."""
    from kernelfit.pipeline.select_grid import default_grid

    if config.sigma == "auto" and config.kernel not in ("gaussian", "laplacian"):
        raise InputError(f"the {config.kernel} kernel has no bandwidth to choose; drop "
                         "--sigma auto (use --lam auto to choose the ridge)")
    check_scale(config.gamma, config.sigma, config.kernel)
    scale = "auto" if config.sigma == "auto" else (config.sigma or 1.0)
    grid = default_grid(X, kernel=config.kernel, sigma=scale, lam=config.lam, seed=config.seed,
                        kernel_params=_kernel_params(config))
    if config.sigma is None:
        grid.pop("sigma", None)
        if config.gamma is not None:
            grid["gamma"] = [config.gamma]
    return grid


def _select(config: RunConfig, X, y, opts: Options, log) -> dict:
    """Choose the "auto" hyper-parameters on the training set; returns what the record keeps."""
    from kernelfit.pipeline.select import select

    grid = auto_grid(config, X)
    sel = select(X, y, kernel=config.kernel, grid=grid, seed=config.seed, options=opts,
                 progress=opts.progress, kernel_params=_kernel_params(config))
    log(f"selection: {sel.summary()}")
    for s in sel.scores:
        chosen = "  <- chosen" if s["params"] == sel.params else ""
        params = ", ".join(f"{k}={v:.4g}" for k, v in s["params"].items())
        score = ("failed: " + s["failed"]) if s["failed"] else \
            f"validation error {100 * s['val_error']:.2f}%"
        log(f"  {params}: {score}{chosen}")
    return {"grid": grid, **sel.as_dict()}


def _fit_checked(clf, X, y, plan) -> list[str]:
    """Fit with the run's plan, collecting the solver's accuracy warnings for the record."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AccuracyWarning)
        clf.fit_planned(X, y, plan)
    found = list(getattr(clf, "warnings_", []))
    for w in caught:
        if issubclass(w.category, AccuracyWarning):
            if str(w.message) not in found:
                found.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not (np.isfinite(clf.norm_) and np.isfinite(clf.relative_residual_)):
        # No reading of a NaN model is right: never a record that looks like a result.
        raise AccuracyError(f"the {clf.solver} solve returned a non-finite solution (norm "
                            f"{clf.norm_}, residual {clf.relative_residual_}); "
                            + ("; ".join(found) + "; " if found else "")
                            + "try --solver cholesky, --dtype float64, --lam > 0"
                            + (", or a smaller --sigma" if clf.kernel in ("gaussian", "laplacian")
                               else ""))
    if found and plan.options.strict:
        raise AccuracyError("; ".join(found))
    return found


def fit_run(config: RunConfig, *, log=None, refuse_streamed: bool = False) -> FittedRun:
    """Fit the interpolant the config describes; return its record and the fitted model.

    Parameters
    ----------
    config : RunConfig
    log : callable, optional
        Receives one-line notices (a torch fallback to the CPU, the
        hyper-parameter selection); None: they go to the record only.
    refuse_streamed : bool
        Raise InputError instead of streaming K (the caller will save the
        model, which needs the training features).

    Raises
    ------
    PlanError
        Before any large allocation, when the run cannot fit in memory.
    AccuracyError
        The solution is not finite; or ``config.options.strict`` and the solve
        was less exact than its dtype allows (or CG stopped short of its tolerance).
    """
    from kernelfit.features import make_features

    log = log or (lambda message: None)
    auto = config.sigma == "auto" or config.lam == "auto"
    data = prepare(config)
    n, m = len(data.train_labels), len(data.test_labels)
    notes = list(data.notes)
    timings = {"load": data.seconds}

    fmap = make_features(config.features, seed=config.seed, **config.feature_params)
    # Planned from the image shape before the map is fitted: a front end whose own
    # fit (randconv's filter bank) does not fit is refused before it allocates.
    shape = data.train_images.shape[1:]
    streamed = should_stream(config, fmap, n + m, fmap.dim_for(shape))
    if streamed and refuse_streamed:
        raise InputError(STREAMED_REFUSAL)
    if streamed and auto:
        raise InputError("--sigma auto / --lam auto select on the training features, which a "
                         "streamed K never holds; add --no-stream or give the values")
    n_classes = len(np.unique(data.train_labels))
    # The run's one resolution: what runs below is what this Plan says.
    plan = plan_run(fmap, n, m, n_classes, solver=config.solver, options=config.options,
                    streamed=streamed, image_shape=shape)
    opts = plan.options
    for note in plan.notes:
        log(f"notice: {note}")
    notes += plan.notes
    if auto:
        plan_selection(fmap, n, m, n_classes, options=config.options, image_shape=shape)
    t = time.perf_counter()
    fmap.fit(data.train_images)
    timings["fit_features"] = time.perf_counter() - t

    t = time.perf_counter()
    selection = None
    if streamed:
        kernel = _stream_kernel(config, fmap)
        K, X_test = _streamed_gram(config, fmap, data, kernel, opts)
        timings["features+gram"] = time.perf_counter() - t
        # K was built for this fit alone: factored in place, no copy.
        plan = replace(plan, options=opts.replace(overwrite_gram=True))
        clf = KernelInterpolantClassifier(kernel="precomputed", lam=config.lam,
                                          solver=config.solver,
                                          options=config.options.replace(overwrite_gram=True))
        with stage("fit", flops=_fit_flops(n, 0, n_classes, config.solver, opts),
                   dtype=opts.dtype, enabled=opts.progress):
            found = _fit_checked(clf, K, data.train_labels, plan)
        del K
        solver = f"{config.solver} (streamed K)"
    else:
        X_train, X_test = featurize(config, fmap, data)
        timings["features"] = time.perf_counter() - t
        params = dict(gamma=config.gamma, sigma=config.sigma, lam=config.lam)
        if auto:
            t = time.perf_counter()
            # the selection's own fits (smaller, precomputed inner products) plan themselves
            selection = _select(config, X_train, data.train_labels,
                                config.options.replace(dtype=plan.dtype), log)
            timings["select"] = time.perf_counter() - t
            params = {**{k: v for k, v in params.items() if v != "auto"},
                      **selection["params"]}
            if data.randomization != "none":
                notes.append(f"the hyper-parameters were chosen on the randomized "
                             f"({data.randomization}) training set; for the clean setting's "
                             "values give them explicitly (or use `kernelfit sweep`, which "
                             "selects on clean labels)")
        clf = KernelInterpolantClassifier(kernel=config.kernel, degree=config.degree,
                                          coef0=config.coef0, solver=config.solver,
                                          options=config.options, **network_params(config),
                                          **params)
        with stage("fit", flops=_fit_flops(n, fmap.dim, n_classes, config.solver, opts),
                   dtype=opts.dtype, enabled=opts.progress):
            found = _fit_checked(clf, X_train, data.train_labels, plan)
        kernel, solver = clf.kernel_, config.solver
        if opts.scheduler is not None:
            solver += f" (dask, {clf.solver_info_['dask']['workers']} workers)"
            notes.append("K was built and solved in the Dask workers' memory: the peak "
                         "memory here is this process's only")
    timings.update(clf.timings_)
    stop = clf.solver_info_.get("refine_stop", "")
    if stop and not stop.startswith("all"):
        notes.append(f"iterative refinement {stop}")

    if config.kernel == "linear" and 0.5 < fmap.dim / n < 2:
        notes.append(f"linear kernel with feature dim {fmap.dim} close to n = {n}: the "
                     "double-descent peak; expect poor test error (use a Gaussian kernel "
                     "or keep dim far from n)")
    if fmap.name == "rff" and config.kernel != "linear":
        notes.append(f"rff features under the {config.kernel} kernel: Phi Phi^T approximates "
                     "the Gaussian kernel only with --kernel linear")
    t = time.perf_counter()
    test_error = test_sq_loss = None
    if m:
        d = 0 if streamed else fmap.dim
        with stage("predict", flops=2.0 * m * n * (d + n_classes), dtype=opts.dtype,
                   enabled=opts.progress):
            F = clf.decision_values(X_test)
            test_error = float(np.mean(clf.predict_from(F) != data.test_labels))
            test_sq_loss = square_loss(F, data.test_labels, clf.classes_)
    timings["predict"] = time.perf_counter() - t
    gflops = {"cholesky": clf.solver_info_["gflops"]} if "gflops" in clf.solver_info_ else {}
    record = RunRecord(
        dataset=config.dataset, n_train=n, n_test=m, kernel=kernel.params,
        solver=solver, dtype=opts.dtype, lam=float(clf.lam),
        train_error=clf.train_error_, test_error=test_error, test_sq_loss=test_sq_loss,
        norm=clf.norm_,
        relative_residual=clf.relative_residual_, features=fmap.name,
        residual_against=clf.solver_info_.get("residual_against"),
        cond_estimate=clf.solver_info_.get("cond_estimate"),
        cond_estimate_method=clf.solver_info_.get("cond_estimate_method"),
        refine_history=list(clf.solver_info_.get("refine_history", [])),
        feature_params=fmap.params, feature_dim=fmap.dim,
        preprocessing=data.preprocessing + list(fmap.preprocessing),
        randomization=data.randomization, backend=plan.backend, device=plan.device,
        jitter=clf.solver_info_.get("jitter", 0.0), iterations=clf.n_iter_,
        converged=bool(getattr(clf, "converged_", True)) and not found, warnings=found,
        selection=selection, timings=timings, gflops=gflops,
        memory_plan_bytes=plan.total_bytes, plan=_plan_record(clf.plan_),
        peak_rss_bytes=peak_rss_bytes(), seed=config.seed, notes=notes,
        convergence=_convergence(clf.solver_info_))
    return FittedRun(record, clf, fmap, config, streamed)


def square_loss(F, labels, classes) -> float:
    """Mean over rows of |F - onehot(labels)|^2, one column of F per class in ``classes``
    (a label no column names has the all-zero target row)."""
    F = np.asarray(F, dtype=np.float64)
    Y = (np.asarray(labels)[:, None] == np.asarray(classes)[None, :]).astype(np.float64)
    return float(np.mean(np.sum((F - Y) ** 2, axis=1)))


def run(config: RunConfig, *, log=None) -> RunRecord:
    """Fit the interpolant the config describes and return its record."""
    return fit_run(config, log=log).record


def _plan_record(plan) -> dict:
    """The Plan that ran, for the record: its decisions and bytes (the options are there
    already as the run's settings)."""
    out = plan.as_dict()
    out.pop("options")
    return out


def _convergence(info: dict) -> dict | None:
    """What an iterative solver recorded of its convergence (pcg), for the record."""
    if "history" not in info or "stopping" not in info:
        return None
    keys = ("stopping", "preconditioner", "history", "best_iteration", "returned_iteration",
            "val_size", "val_error", "refit")
    return {k: info[k] for k in keys if k in info}


def _fit_flops(n: int, d: int, c: int, solver: str, opts: Options) -> float | None:
    """Floating-point work of the exact solve: Gram (upper triangle), Cholesky, solves,
    and every refinement step asked for."""
    if solver != "cholesky":
        return None     # CG: as many passes over K as iterations, not known in advance
    from kernelfit.engine.solvers.refine import refine_flops
    # opts: the Plan's, its refinement reference resolved
    refine = refine_flops(n, d, c, opts.refine_steps, exact=opts.refine_against == "exact")
    # refinement works in float64, at about half the float32 GEMM rate the stage assumes
    return n * n * d + n**3 / 3 + 4.0 * n * n * c + refine * (2 if opts.dtype == "float32"
                                                               else 1)

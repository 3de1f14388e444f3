"""One run, end to end: data -> randomization -> preprocessing -> features -> K -> solve -> record.

Two roads from features to K. The usual one materializes the (cached) feature
matrices and lets the estimator build K blockwise. Front ends whose features
come in column chunks (randconv's filter groups) can instead be *streamed*:
K += Phi_c Phi_c^T chunk by chunk, so that the n x 8F feature matrix of a
32,000-filter network never exists; the estimator then takes K precomputed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..kernels import make_kernel
from ..model import KernelInterpolantClassifier
from ..options import Options
from ..report import RunRecord, peak_rss_bytes

# Stream when the train + test feature matrices would take more than this.
STREAM_ABOVE_BYTES = 2 * 2**30
# Filters (units) per streamed column chunk: 256 randconv filters are 2,048 feature
# columns, 400 MB per chunk at n = 50,000.
STREAM_CHUNK_UNITS = 256


@dataclass
class RunConfig:
    """What a run needs; every field has the default `kernelfit run` uses."""

    dataset: str = "digits"
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0
    kernel: str = "gaussian"
    gamma: float | None = None
    sigma: float | None = None
    degree: int = 3
    coef0: float = 1.0
    lam: float = 0.0
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


def prepare(config: RunConfig) -> Prepared:
    """Load the split, apply the randomization test, then the preprocessing steps."""
    from ..data import load_split
    from ..data.preprocess import Preprocessing
    from ..data.randomize import parse_randomization

    t = time.perf_counter()
    rand = parse_randomization(config.randomize)
    pre = Preprocessing.parse(config.preprocessing)
    train, test = load_split(config.dataset, n_train=config.n_train, n_test=config.n_test,
                             seed=config.seed, data_home=config.data_home)
    train, test = rand.apply(train, test, seed=config.seed)
    return Prepared(pre.apply(train.images, train.max_value), train.labels,
                    pre.apply(test.images, test.max_value), test.labels,
                    pre.describe(), rand.describe(), time.perf_counter() - t)


def _should_stream(config: RunConfig, fmap, n: int) -> bool:
    if config.stream is not None:
        if config.stream and not hasattr(fmap, "transform_columns"):
            raise InputError(f"the {fmap.name} front end cannot be streamed; drop --stream")
        return config.stream
    return hasattr(fmap, "transform_columns") and n * fmap.dim * 4 > STREAM_ABOVE_BYTES


def _featurize(config: RunConfig, fmap, data: Prepared) -> tuple[np.ndarray, np.ndarray]:
    # Raw pixels cost less to recompute than to read back: never cached.
    if not config.feature_cache or fmap.name == "raw":
        progress = config.options.progress
        return (fmap.transform(data.train_images, progress=progress),
                fmap.transform(data.test_images, progress=progress))
    from ..features.cache import cached_transform
    key = dict(dataset=config.dataset, seed=config.seed, preprocessing=data.preprocessing,
               randomization=data.randomization, data_home=config.data_home)
    return (cached_transform(fmap, data.train_images, key={**key, "split": "train"}),
            cached_transform(fmap, data.test_images, key={**key, "split": "test"}))


def _streamed_gram(config: RunConfig, fmap, data: Prepared, dtype: str):
    """K (n x n) and k(test, train) accumulated from the front end's column chunks."""
    from ..gram_stream import build_gram_streamed

    if config.gamma is None and config.sigma is None and config.kernel != "linear":
        # The "scale" rule 1 / (d Var X) on standardized features (Var = 1).
        kernel = make_kernel(config.kernel, gamma=1.0 / fmap.dim, degree=config.degree,
                             coef0=config.coef0)
    else:
        kernel = make_kernel(config.kernel, gamma=config.gamma, sigma=config.sigma,
                             degree=config.degree, coef0=config.coef0)
    chunks = fmap.iter_column_chunks(data.train_images, data.test_images, STREAM_CHUNK_UNITS,
                                     progress=config.options.progress)
    K, K_test = build_gram_streamed(chunks, len(data.train_images), len(data.test_images),
                                    kernel, options=config.options, standardize=True, dtype=dtype)
    return kernel, K, K_test


def run(config: RunConfig) -> RunRecord:
    """Fit the interpolant the config describes and return its record."""
    from ..features import make_features

    data = prepare(config)
    n = len(data.train_labels)
    opts = config.options.replace(dtype=config.options.resolve_dtype(n))
    timings = {"load": data.seconds}
    notes = []

    t = time.perf_counter()
    fmap = make_features(config.features, seed=config.seed, **config.feature_params)
    fmap.fit(data.train_images)
    timings["fit_features"] = time.perf_counter() - t

    t = time.perf_counter()
    if _should_stream(config, fmap, n + len(data.test_labels)):
        kernel, K, K_test = _streamed_gram(config, fmap, data, opts.dtype)
        timings["features+gram"] = time.perf_counter() - t
        clf = KernelInterpolantClassifier(kernel="precomputed", lam=config.lam,
                                          solver=config.solver,
                                          options=opts.replace(overwrite_gram=True))
        clf.fit(K, data.train_labels)
        del K
        X_test, solver = K_test, f"{config.solver} (streamed K)"
    else:
        X_train, X_test = _featurize(config, fmap, data)
        timings["features"] = time.perf_counter() - t
        clf = KernelInterpolantClassifier(kernel=config.kernel, gamma=config.gamma,
                                          sigma=config.sigma, degree=config.degree,
                                          coef0=config.coef0, lam=config.lam,
                                          solver=config.solver, options=opts)
        clf.fit(X_train, data.train_labels)
        kernel, solver = clf.kernel_, config.solver
    timings.update(clf.timings_)

    if config.kernel == "linear" and 0.5 < fmap.dim / n < 2:
        notes.append(f"linear kernel with feature dim {fmap.dim} close to n = {n}: the "
                     "double-descent peak; expect poor test error (use a Gaussian kernel "
                     "or keep dim far from n)")
    t = time.perf_counter()
    test_error = (float(np.mean(clf.predict(X_test) != data.test_labels))
                  if len(data.test_labels) else None)
    timings["predict"] = time.perf_counter() - t
    gflops = {"cholesky": clf.solver_info_["gflops"]} if "gflops" in clf.solver_info_ else {}
    return RunRecord(
        dataset=config.dataset, n_train=n, n_test=len(data.test_labels), kernel=kernel.params,
        solver=solver, dtype=opts.dtype, lam=config.lam,
        train_error=clf.train_error_, test_error=test_error, norm=clf.norm_,
        relative_residual=clf.relative_residual_, features=fmap.name,
        feature_params=fmap.params, feature_dim=fmap.dim,
        preprocessing=data.preprocessing + list(fmap.preprocessing),
        randomization=data.randomization, jitter=clf.solver_info_.get("jitter", 0.0),
        iterations=clf.n_iter_, timings=timings, gflops=gflops,
        peak_rss_bytes=peak_rss_bytes(), seed=config.seed, notes=notes)

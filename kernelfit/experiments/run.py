"""One run, end to end: data -> (randomization) -> features -> K -> solve -> record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..model import KernelInterpolantClassifier
from ..options import Options
from ..report import RunRecord, peak_rss_bytes


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
    features: str = "raw"
    feature_params: dict = field(default_factory=dict)
    randomize: str = "none"
    data_home: str | None = None
    options: Options = field(default_factory=Options)


def load_features(config: RunConfig):
    """Data for a run as float32 feature matrices, plus what the record needs to say."""
    from ..data import load_split
    from ..data.randomize import parse_randomization
    from ..features import make_features

    t = time.perf_counter()
    train, test = load_split(config.dataset, n_train=config.n_train, n_test=config.n_test,
                             seed=config.seed, data_home=config.data_home)
    rand = parse_randomization(config.randomize)
    train, test = rand.apply(train, test, seed=config.seed)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    fmap = make_features(config.features, dataset=config.dataset, seed=config.seed,
                         **config.feature_params)
    fmap.fit(train.images)
    Xtr = fmap.transform(train.images, progress=config.options.progress)
    Xte = fmap.transform(test.images, progress=config.options.progress)
    meta = {"load": load_s, "features": time.perf_counter() - t, "randomization": rand.describe(),
            "feature_params": fmap.params, "preprocessing": fmap.preprocessing,
            "feature_name": fmap.name}
    return Xtr, train.labels, Xte, test.labels, meta


def run(config: RunConfig) -> RunRecord:
    """Fit the interpolant the config describes and return its record."""
    Xtr, ytr, Xte, yte, meta = load_features(config)
    clf = KernelInterpolantClassifier(kernel=config.kernel, gamma=config.gamma, sigma=config.sigma,
                                      degree=config.degree, coef0=config.coef0, lam=config.lam,
                                      solver=config.solver, options=config.options)
    clf.fit(Xtr, ytr)
    t = time.perf_counter()
    test_error = float(np.mean(clf.predict(Xte) != yte)) if len(Xte) else None
    timings = {"load": meta["load"], "features": meta["features"], **clf.timings_,
               "predict": time.perf_counter() - t}
    gflops = {}
    if "gflops" in clf.solver_info_:
        gflops["cholesky"] = clf.solver_info_["gflops"]
    return RunRecord(
        dataset=config.dataset, n_train=len(Xtr), n_test=len(Xte), kernel=clf.kernel_.params,
        solver=config.solver, dtype=config.options.dtype, lam=config.lam,
        train_error=clf.train_error_, test_error=test_error, norm=clf.norm_,
        relative_residual=clf.relative_residual_, features=meta["feature_name"],
        feature_params=meta["feature_params"], feature_dim=Xtr.shape[1],
        preprocessing=meta["preprocessing"], randomization=meta["randomization"],
        jitter=clf.solver_info_.get("jitter", 0.0), iterations=clf.n_iter_, timings=timings,
        gflops=gflops, peak_rss_bytes=peak_rss_bytes(), seed=config.seed)

"""What a selection searches and on what: its grid and its validation splits.

The default grid (:func:`default_grid`: bandwidths around the median pairwise
distance of the training points, :func:`median_distance`, and a small log grid
of ``lam``), the check that expands a user's grid into parameter points, the
stratified hold-out or k-fold splits of the training labels, and the walk one
step past a grid end that :func:`kernelfit.pipeline.select.select` takes
when its choice sits there.
"""

from __future__ import annotations

import math

import numpy as np

from kernelfit.engine.kernels import KERNELS, make_kernel, row_sq_norms
from kernelfit.errors import InputError
from kernelfit.params import real, whole

# Bandwidth factors of the default grid, times the median pairwise distance of
# a sample: sqrt(2) steps from m / 4 to m. For n points spread in d dimensions
# E|x - y|^2 = 2 tr Cov(X), so the scale rule 1 / (d Var X) sits near m / 2,
# the grid's centre (MNIST on [0, 1]: m ~ 10, the paper's sigma = 5).
SIGMA_FACTORS = (0.25, 0.25 * math.sqrt(2), 0.5, 0.5 * math.sqrt(2), 1.0)
# The laplacian kernel exp(-|x - y| / sigma) wants its sigma on the distance's own scale.
LAPLACIAN_FACTORS = (0.5, 1.0, 2.0, 4.0, 8.0)
# lam = "auto": interpolation plus a small log grid, relative to the mean of K's diagonal.
LAM_FACTORS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
# Points sampled for the median distance: its estimate is stable to a few percent.
MEDIAN_SAMPLE = 1000
GRID_KEYS = ("sigma", "gamma", "lam")


def median_distance(X, *, sample: int = MEDIAN_SAMPLE, seed: int = 0) -> float:
    """Median Euclidean distance between distinct rows of a seeded sample of ``X``."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) < 2:
        raise InputError(f"the median distance needs X shaped (n >= 2, d), got {X.shape}")
    if len(X) > sample:
        X = X[np.sort(np.random.default_rng(seed).choice(len(X), sample, replace=False))]
    sq = row_sq_norms(X)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (X @ X.T), 0.0)
    m = float(np.sqrt(np.median(d2[np.triu_indices(len(X), k=1)])))
    if not (math.isfinite(m) and m > 0):
        raise InputError("the median pairwise distance of X is 0 (most rows coincide): no "
                         "bandwidth scale can be derived; pass the grid explicitly")
    return m


def default_grid(X, *, kernel: str = "gaussian", sigma="auto", lam=0.0,
                 sample: int = MEDIAN_SAMPLE, seed: int = 0,
                 kernel_params: dict | None = None) -> dict:
    """A grid for :func:`select` on data like ``X``.

    Parameters
    ----------
    X : array (n, d)
        Training features (a sample of ``sample`` rows sets the scale).
    kernel : {"gaussian", "laplacian", "linear", "polynomial"}
    sigma : "auto" or float
        "auto": the median pairwise distance m times :data:`SIGMA_FACTORS`
        (gaussian: m/4 ... m in sqrt(2) steps, around the scale rule's ~m/2)
        or :data:`LAPLACIAN_FACTORS`; a number: that bandwidth only. Ignored
        for the linear and polynomial kernels.
    lam : "auto" or float
        "auto": :data:`LAM_FACTORS` (0 and 1e-4 ... 1e-1 times the mean of
        K's diagonal, which is 1 for the distance kernels); a number: that one.

    Returns
    -------
    dict
        ``{"sigma": [...], "lam": [...]}`` (no "sigma" for linear/polynomial).
    """
    if kernel not in KERNELS:
        raise InputError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    X = np.asarray(X)
    grid = {}
    if kernel in ("gaussian", "laplacian"):
        if sigma == "auto":
            m = median_distance(X, sample=sample, seed=seed)
            factors = SIGMA_FACTORS if kernel == "gaussian" else LAPLACIAN_FACTORS
            grid["sigma"] = [m * f for f in factors]
        else:
            grid["sigma"] = [_number("sigma", sigma, positive=True)]
    if lam == "auto":
        if kernel in ("gaussian", "laplacian"):
            diag = 1.0
        else:
            k = make_kernel(kernel, X=X, **(kernel_params or {}))
            diag = float(np.mean(k.diag(X[:MEDIAN_SAMPLE])))
        grid["lam"] = [diag * f for f in LAM_FACTORS]
    else:
        grid["lam"] = [_number("lam", lam, positive=False)]
    return grid


def _number(name, v, *, positive: bool) -> float:
    """``v`` (a number or its text) as a finite float > 0 (``positive``) or >= 0."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number {'> 0' if positive else '>= 0'} or 'auto', "
                         f"got {v!r}") from None
    return real(name, v, 0, lo_open=positive)


def _check_grid(grid: dict, kernel: str) -> list[dict]:
    """Validate ``grid`` and expand it to a list of parameter dicts (lam outermost)."""
    if not isinstance(grid, dict) or not grid:
        raise InputError(f"grid must be a non-empty dict like {{'sigma': [2.0, 4.0], 'lam': "
                         f"[0.0]}}, got {grid!r}")
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise InputError(f"unknown grid keys {unknown}; a grid varies {', '.join(GRID_KEYS)}")
    if "sigma" in grid and "gamma" in grid:
        raise InputError("grid the kernel scale as sigma or as gamma, not both")
    if kernel == "linear" and ("sigma" in grid or "gamma" in grid):
        raise InputError("the linear kernel has no scale to select; grid only lam")
    values = {}
    for k, vs in grid.items():
        vs = [vs] if np.isscalar(vs) else list(vs)
        if not vs:
            raise InputError(f"grid[{k!r}] is empty; give at least one value")
        values[k] = [_number(k, v, positive=k != "lam") for v in vs]
        if len(set(values[k])) != len(values[k]):
            raise InputError(f"grid[{k!r}] repeats a value: {values[k]}")
    lams = values.pop("lam", [0.0])
    (scale_key, scales), = values.items() if values else ((None, [None]),)
    return [{**({scale_key: s} if scale_key else {}), "lam": lam}
            for lam in lams for s in scales]


def _splits(y, val_fraction, n_folds, seed):
    """(fit indices, val indices) pairs and the rule that describes them."""
    from sklearn.model_selection import StratifiedKFold

    from kernelfit.data.dataset import stratified_indices

    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise InputError(f"selection needs at least 2 classes in the training labels, got "
                         f"{len(classes)}")
    if n_folds is not None:
        whole("n_folds", n_folds, 2, hint="None: a hold-out")
        if n_folds > counts.min():
            raise InputError(f"{n_folds}-fold stratified CV needs >= {n_folds} points of every "
                             f"class; the rarest has {counts.min()}. Use fewer folds or a "
                             "hold-out (n_folds=None)")
        skf = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
        return (list(skf.split(np.zeros(len(y)), y)),
                f"{n_folds}-fold stratified CV on the training set (seed {seed})")
    real("val_fraction", val_fraction, 0, 1, lo_open=True, hi_open=True)
    n_val = int(round(val_fraction * len(y)))
    if not len(classes) <= n_val <= len(y) - 2:
        need = max(math.ceil(len(classes) / val_fraction), len(classes) + 2)
        raise InputError(f"a {val_fraction:g} hold-out of {len(y)} training points leaves "
                         f"{n_val} to validate on and {len(y) - n_val} to fit; it needs one "
                         f"validation point per class ({len(classes)}) and 2 to fit. Use at "
                         f"least {need} training points, another val_fraction, or fixed "
                         "settings instead of a selection")
    val = stratified_indices(y, n_val, seed)
    fit = np.setdiff1d(np.arange(len(y)), val)
    return ([(fit, val)], f"hold-out {100 * val_fraction:g}% of the training set "
                          f"(stratified, seed {seed})")


def _ends(params: dict, points: list[dict]):
    """(key, value, sorted grid values, "largest"/"smallest") of each choice at a grid end.

    Only grids of 3 or more count, and lam = 0 (no ridge) is no end to walk out of.
    """
    for k, v in params.items():
        values = sorted({p[k] for p in points})
        if len(values) >= 3 and v in (values[0], values[-1]) and not (k == "lam" and v == 0):
            yield k, v, values, "largest" if v == values[-1] else "smallest"


def _beyond(params: dict, points: list[dict]) -> list[dict]:
    """One more point past each end the choice sits at, a grid step further (lam: x10)."""
    out = []
    for k, v, values, end in _ends(params, points):
        if k == "lam":
            step = 10.0
        else:
            step = values[-1] / values[-2] if end == "largest" else values[1] / values[0]
        out.append({**params, k: v * step if end == "largest" else v / step})
    return out


def _edge_notes(params: dict, points: list[dict]) -> list[str]:
    """Say so when a choice sits at the end of its grid: the optimum may lie beyond."""
    return [f"the chosen {k} = {v:.4g} is the {end} of its grid ({values[0]:.4g} ... "
            f"{values[-1]:.4g}): the best value may lie beyond it"
            for k, v, values, end in _ends(params, points)]

"""Hyper-parameter selection on a validation split carved from the training set, never the test set.

:func:`select` splits only the training data it is given (a stratified
hold-out, or stratified k-fold), fits :class:`~kernelfit.model.KernelInterpolantClassifier`
once per grid point and fold, scores it on the held-out part, and picks the
point with the lowest validation error. It never sees a test set, so a
selection cannot leak test labels into a reported test error.

One inner-product matrix per fold serves every grid point: a kernel value is
a function of <x_i, x_j> and the squared norms (Gaussian: K = exp(-D2 / (2
sigma^2)) with D2 = |x_i|^2 + |x_j|^2 - 2 <x_i, x_j>), so a grid of sigmas
costs one GEMM plus, per sigma, an element-wise map and the solve.

Ties (equal mean validation error, common with a few hundred validation
points) go to the simplest model: the smallest ``lam``, then the middle of
the tied bandwidths (the centre of a flat valley is the choice least
sensitive to which points landed in the validation split).

The grid (its defaults, its check, the walk past its ends) and the splits are
in :mod:`kernelfit.pipeline.select_grid`.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from kernelfit.engine.kernels import KERNELS, make_kernel, row_sq_norms
from kernelfit.errors import AccuracyWarning, InputError, KernelfitError
from kernelfit.formats import jsonable
from kernelfit.model import KernelInterpolantClassifier
from kernelfit.options import Options
from kernelfit.params import whole
from kernelfit.pipeline.select_grid import _beyond, _check_grid, _edge_notes, _splits, default_grid
from kernelfit.validation import check_no_duplicates

# Bytes of one float64 row block in the inner-product matrix's GEMMs.
INNER_BLOCK_BYTES = 2**27


@dataclass
class Selection:
    """What :func:`select` chose, every score it saw, and how it split the data.

    Attributes
    ----------
    params : dict
        The chosen values, e.g. ``{"sigma": 4.2, "lam": 0.0}``.
    scores : list of dict
        One per grid point, in grid order: its params, ``val_error`` (the
        mean over folds), ``fold_errors``, ``norms`` and ``residuals`` per
        fold, ``warnings`` (accuracy warnings of its fits: an ill-conditioned
        K at a wide bandwidth), and ``failed`` (the error message of a fit
        that raised, else None; such a point scores ``inf``).
    rule : str
        How the validation data was carved, e.g. "hold-out 20% of the
        training set (stratified, seed 0)".
    n_fit, n_val : int
        Points fitted on and scored on (per fold).
    seconds : float
        Wall time of the whole selection.
    kernel : str
    notes : list of str
        E.g. a choice at the end of its grid (the optimum may lie beyond).
    """

    params: dict
    scores: list[dict]
    rule: str
    n_fit: int = 0
    n_val: int = 0
    seconds: float = 0.0
    kernel: str = "gaussian"
    notes: list = field(default_factory=list)

    @property
    def best(self) -> dict:
        """The score entry of the chosen point."""
        return next(s for s in self.scores if s["params"] == self.params)

    def as_dict(self) -> dict:
        """JSON-able, for run records."""
        return jsonable(asdict(self))

    def summary(self) -> str:
        """One line: what was chosen and on what."""
        chosen = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params.items())
        return (f"chose {chosen}: validation error {100 * self.best['val_error']:.2f}% "
                f"({self.rule}; {len(self.scores)} grid points)"
                + "".join(f"; NOTE: {n}" for n in self.notes))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
def _inner(A, B) -> np.ndarray:
    """A @ B.T in float64, from row blocks cast one at a time.

    No float64 copy of A or B is made (a streamed front end's features are
    8 x filters wide), and no single NumPy A @ A.T of a huge A (its SYRK path
    crashed here at n = 47,000).
    """
    out = np.empty((len(A), len(B)))
    step = int(max(16, min(2048, INNER_BLOCK_BYTES // (8 * max(A.shape[1], 1)))))
    for j in range(0, len(B), step):
        Bj = np.asarray(B[j:j + step], dtype=np.float64)
        for i in range(0, len(A), step):
            np.matmul(np.asarray(A[i:i + step], dtype=np.float64), Bj.T,
                      out=out[i:i + step, j:j + step])
    return out


def _tie_break(scores: list[dict]) -> dict:
    """The lowest mean validation error; ties: smallest lam, then the middle scale."""
    best = min(s["val_error"] for s in scores)
    if not math.isfinite(best):
        raise KernelfitError("every grid point failed to fit: " +
                             "; ".join(f"{s['params']}: {s['failed']}" for s in scores[:3]))
    tied = [s for s in scores if s["val_error"] == best]
    lam = min(s["params"]["lam"] for s in tied)
    tied = [s for s in tied if s["params"]["lam"] == lam]
    scale = next((k for k in ("sigma", "gamma") if k in tied[0]["params"]), None)
    if scale:
        tied.sort(key=lambda s: s["params"][scale])
    return tied[(len(tied) - 1) // 2]


def select(X, y, *, kernel: str = "gaussian", grid: dict | None = None,
           val_fraction: float = 0.2, n_folds: int | None = None, seed: int = 0,
           options: Options | None = None, progress: bool = False,
           extend: int = 0, kernel_params: dict | None = None) -> Selection:
    """Choose the kernel scale and lam on a validation split of (X, y), the training set only.

    Parameters
    ----------
    X : array (n, d)
        Training features. Never pass test data: nothing here needs it.
    y : array (n,)
        Training labels (classification: the error is the misclassified fraction).
    kernel : {"gaussian", "laplacian", "linear", "polynomial"}
    grid : dict, optional
        ``{"sigma": [...], "lam": [...]}`` (or "gamma" instead of "sigma");
        None: :func:`default_grid` with the bandwidth selected and lam = 0.
    val_fraction : float in (0, 1)
        Hold-out share (stratified by class); ignored when ``n_folds`` is set.
    n_folds : int >= 2, optional
        Stratified k-fold cross-validation instead of one hold-out.
    seed : int
        Seeds the split (and the median-distance sample); same seed, same choice.
    options : kernelfit.Options, optional
        Passed to each fit (dtype, jitter, ...).
    progress : bool
        A progress bar over grid points x folds.
    extend : int >= 0
        When the best value of a grid of 3 or more sits at its end (lam = 0
        excepted), score one more point a grid step beyond it (lam: x10), up
        to ``extend`` times: a line search out of a grid that was too narrow.
        A choice still at the end afterwards is noted in ``Selection.notes``.
    kernel_params : dict, optional
        Fixed parameters of the kernel for every point (nngp / ntk: depth,
        weight_std, bias_std).

    Returns
    -------
    Selection
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    if kernel not in KERNELS:
        raise InputError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)} "
                         "(a precomputed K has no points to split)")
    whole("seed", seed, 0)
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise InputError(f"X must be (n, d) and y (n,) with the same n, got {X.shape} and "
                         f"{y.shape}")
    if not np.issubdtype(X.dtype, np.number) or not np.all(np.isfinite(X)):
        raise InputError("X must be numeric and finite; impute or drop NaN/inf rows first")
    whole("extend", extend, 0)
    if grid is None:
        grid = default_grid(X, kernel=kernel, seed=seed, kernel_params=kernel_params)
    points = _check_grid(grid, kernel)
    opts = options or Options()
    splits, rule = _splits(y, val_fraction, n_folds, seed)

    bar = tqdm(total=len(points) * len(splits), desc="select", unit="fit",
               disable=not progress)
    scores = _score(X, y, kernel, points, splits, opts, bar, kernel_params)
    chosen = _tie_break(scores)
    for _ in range(extend):
        more = _beyond(chosen["params"], [s["params"] for s in scores])
        if not more:
            break
        bar.total += len(more) * len(splits)
        scores += _score(X, y, kernel, more, splits, opts, bar, kernel_params)
        chosen = _tie_break(scores)
    bar.close()
    fit_idx, val_idx = splits[0]
    return Selection(params=dict(chosen["params"]), scores=scores, rule=rule,
                     n_fit=len(fit_idx), n_val=len(val_idx),
                     seconds=time.perf_counter() - t0, kernel=kernel,
                     notes=_edge_notes(chosen["params"], [s["params"] for s in scores]))


def _score(X, y, kernel, points, splits, opts, bar, kernel_params=None) -> list[dict]:
    """Fit every point on every fold's fit part; its errors on the held-out part."""
    scores = [{"params": p, "fold_errors": [], "norms": [], "residuals": [], "failed": None,
               "warnings": []} for p in points]
    for fit_idx, val_idx in splits:
        Xf, Xv = X[fit_idx], X[val_idx]
        if any(p["lam"] == 0 for p in points) and opts.jitter is None:
            check_no_duplicates(Xf)
        G, G_val = _inner(Xf, Xf), _inner(Xv, Xf)
        sq_f, sq_v = row_sq_norms(Xf), row_sq_norms(Xv)
        for p, s in zip(points, scores, strict=True):
            kern = make_kernel(kernel, gamma=p.get("gamma"), sigma=p.get("sigma"), X=Xf,
                               **(kernel_params or {}))
            K = kern.from_inner(G.copy(), sq_f, sq_f)
            K_val = kern.from_inner(G_val.copy(), sq_v, sq_f)
            clf = KernelInterpolantClassifier(kernel="precomputed", lam=p["lam"],
                                              options=opts.replace(overwrite_gram=True,
                                                                   progress=False))
            try:
                with warnings.catch_warnings(record=True) as caught:
                    # An ill-conditioned K at a wide bandwidth is expected on a grid:
                    # its accuracy warning goes into the score, not to the terminal.
                    warnings.simplefilter("always", AccuracyWarning)
                    clf.fit(K, y[fit_idx])
                for w in caught:
                    if not issubclass(w.category, AccuracyWarning):
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                    elif str(w.message) not in s["warnings"]:
                        s["warnings"].append(str(w.message))
                err = float(np.mean(clf.predict(K_val) != y[val_idx]))
                s["norms"].append(clf.norm_)
                s["residuals"].append(clf.relative_residual_)
            except (KernelfitError, np.linalg.LinAlgError) as e:
                # A point that cannot be fitted (K singular in this precision) is
                # a bad choice, not a reason to stop: it scores inf.
                err, s["failed"] = math.inf, str(e)
            s["fold_errors"].append(err)
            del K, K_val, clf
            bar.update()
    for s in scores:
        s["val_error"] = float(np.mean(s["fold_errors"]))
    return scores

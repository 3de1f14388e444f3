"""Hyper-parameter selection: validation errors against a direct NumPy solve, honest splits."""

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist
from sklearn.model_selection import StratifiedKFold

from kernelfit.data.dataset import stratified_indices
from kernelfit.errors import InputError, NotPositiveDefiniteError
from kernelfit.pipeline import select as sel
from kernelfit.pipeline import select_grid
from kernelfit.pipeline.select import Selection, select
from kernelfit.pipeline.select_grid import default_grid, median_distance


def blobs(n=160, d=4, k=3, spread=1.4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 2.0
    y = np.arange(n) % k
    return centres[y] + spread * rng.normal(size=(n, d)), y


def oracle_error(Xf, yf, Xv, yv, sigma, lam=0.0):
    """Gaussian interpolant by a dense NumPy solve, scored on the validation points."""
    classes = np.unique(yf)
    Y = (yf[:, None] == classes[None, :]).astype(float)
    K = np.exp(-cdist(Xf, Xf, "sqeuclidean") / (2 * sigma**2))
    alpha = np.linalg.solve(K + lam * np.eye(len(K)), Y)
    pred = classes[np.argmax(np.exp(-cdist(Xv, Xf, "sqeuclidean") / (2 * sigma**2)) @ alpha, 1)]
    return float(np.mean(pred != yv))


SIGMAS = [0.3, 0.7, 1.5, 3.0]


def test_holdout_errors_match_a_direct_solve_and_the_best_is_chosen():
    X, y = blobs()
    s = select(X, y, grid={"sigma": SIGMAS, "lam": [0.0, 1e-2]}, val_fraction=0.25, seed=3)
    val = stratified_indices(y, 40, 3)
    fit = np.setdiff1d(np.arange(len(y)), val)
    assert (s.n_fit, s.n_val) == (120, 40) and "hold-out 25%" in s.rule
    expected = {}
    for score in s.scores:
        p = score["params"]
        expected[(p["lam"], p["sigma"])] = oracle_error(X[fit], y[fit], X[val], y[val],
                                                        p["sigma"], p["lam"])
        assert score["val_error"] == pytest.approx(expected[(p["lam"], p["sigma"])], abs=1e-12)
    assert len(set(expected.values())) > 1           # the grid matters on this problem
    best = min(expected.values())
    assert expected[(s.params["lam"], s.params["sigma"])] == best
    assert s.best["val_error"] == best
    assert all(r < 1e-6 for sc in s.scores for r in sc["residuals"])


def test_kfold_errors_match_a_direct_solve():
    X, y = blobs(n=90)
    s = select(X, y, grid={"sigma": SIGMAS}, n_folds=3, seed=1)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=1).split(X, y))
    assert "3-fold" in s.rule
    for score in s.scores:
        want = [oracle_error(X[f], y[f], X[v], y[v], score["params"]["sigma"]) for f, v in folds]
        assert score["fold_errors"] == pytest.approx(want, abs=1e-12)
        assert score["val_error"] == pytest.approx(np.mean(want), abs=1e-12)
    assert s.best["val_error"] == min(sc["val_error"] for sc in s.scores)


def test_same_seed_same_choice_and_only_training_data_is_used():
    X, y = blobs()
    a = select(X, y, grid={"sigma": SIGMAS}, seed=5)
    b = select(X.copy(), y.copy(), grid={"sigma": SIGMAS}, seed=5)
    assert a.params == b.params and a.scores == b.scores
    d = a.as_dict()
    assert d["params"] == a.params and isinstance(d["scores"][0]["fold_errors"], list)


def test_ties_go_to_smallest_lam_then_middle_sigma():
    X, y = blobs(spread=0.05)                     # separable: every point scores 0
    s = select(X, y, grid={"sigma": [0.25, 0.5, 1.0], "lam": [1e-3, 0.0]}, seed=0)
    assert all(sc["val_error"] == 0 for sc in s.scores)
    assert s.params == {"sigma": 0.5, "lam": 0.0}


def test_a_failing_grid_point_scores_inf_and_does_not_stop(monkeypatch):
    real = sel.KernelInterpolantClassifier

    class Flaky(real):
        def fit(self, K, y):
            if np.median(K) > 0.9:                # only the huge bandwidth fails
                raise NotPositiveDefiniteError(3, len(K), K.dtype)
            return super().fit(K, y)

    monkeypatch.setattr(sel, "KernelInterpolantClassifier", Flaky)
    X, y = blobs()
    s = select(X, y, grid={"sigma": [0.7, 1.5, 1000.0]})
    failed = [sc for sc in s.scores if sc["failed"]]
    assert [sc["params"]["sigma"] for sc in failed] == [1000.0]
    assert math.isinf(failed[0]["val_error"]) and "not positive definite" in failed[0]["failed"]
    assert s.params["sigma"] != 1000.0
    assert s.as_dict()["scores"][2]["val_error"] == "inf"      # JSON-able


def test_default_grid_centres_on_the_median_distance():
    X, y = blobs(n=300)
    m = float(np.median(pdist(X)))
    assert median_distance(X) == pytest.approx(m, rel=1e-9)
    g = default_grid(X)
    assert g["lam"] == [0.0]
    assert g["sigma"] == pytest.approx([m * f for f in select_grid.SIGMA_FACTORS])
    assert g["sigma"][2] == pytest.approx(m / 2)
    assert default_grid(X, sigma=2.5, lam="auto") == {"sigma": [2.5],
                                                      "lam": list(select_grid.LAM_FACTORS)}
    assert "sigma" not in default_grid(X, kernel="linear")
    s = select(X, y)                               # grid=None: the default grid
    assert s.params["sigma"] in g["sigma"] and len(s.scores) == 5


@pytest.mark.parametrize("kwargs, match", [
    (dict(val_fraction=0.0), "val_fraction"),
    (dict(val_fraction=1.5), "val_fraction"),
    (dict(val_fraction=0.001), "validate on"),
    (dict(n_folds=1), "n_folds"),
    (dict(n_folds=2.5), "n_folds"),
    (dict(n_folds=500), "rarest"),
    (dict(grid={"bandwidth": [1.0]}), "unknown grid keys"),
    (dict(grid={"sigma": [-1.0]}), "sigma"),
    (dict(grid={"sigma": []}), "empty"),
    (dict(grid={"sigma": [1.0, 1.0]}), "repeats"),
    (dict(grid={"sigma": [1.0], "gamma": [1.0]}), "not both"),
    (dict(grid={"lam": [float("nan")]}), "lam"),
    (dict(grid={"sigma": ["abc"]}), "sigma"),
    (dict(kernel="precomputed"), "precomputed"),
    (dict(seed=1.5), "seed"),
])
def test_bad_parameters_are_typed_errors(kwargs, match):
    X, y = blobs(n=60)
    with pytest.raises(InputError, match=match):
        select(X, y, **{"grid": {"sigma": [1.0]}, **kwargs})


def test_bad_data_is_a_typed_error():
    X, y = blobs(n=60)
    with pytest.raises(InputError, match="same n"):
        select(X, y[:-1], grid={"sigma": [1.0]})
    X[3, 1] = np.nan
    with pytest.raises(InputError, match="finite"):
        select(X, y, grid={"sigma": [1.0]})
    with pytest.raises(InputError, match="2 classes"):
        select(np.arange(20.0).reshape(10, 2), np.zeros(10, int), grid={"sigma": [1.0]})


def test_selection_summary_names_the_choice():
    X, y = blobs()
    s = select(X, y, grid={"sigma": [1.5]})
    assert isinstance(s, Selection)
    assert "sigma=1.5" in s.summary() and "hold-out 20%" in s.summary()


def test_inner_products_in_cast_blocks_match_numpy(monkeypatch):
    monkeypatch.setattr(sel, "INNER_BLOCK_BYTES", 8 * 16 * 50)    # 16-row blocks
    rng = np.random.default_rng(0)
    A = rng.normal(size=(70, 50)).astype(np.float32)
    B = rng.normal(size=(37, 50)).astype(np.float32)
    G = sel._inner(A, B)
    assert G.dtype == np.float64
    np.testing.assert_allclose(G, A.astype(float) @ B.astype(float).T, rtol=1e-13, atol=1e-12)


def test_accuracy_warnings_of_wide_bandwidths_go_into_the_scores():
    import warnings

    X, y = blobs(spread=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # nothing escapes to the terminal
        s = select(X, y, grid={"sigma": [0.5, 8.0]})
    narrow, wide = s.scores
    assert narrow["warnings"] == [] and narrow["failed"] is None
    # sigma = 8 on points 0.05 apart: K is numerically singular; either the solver says
    # so (a warning kept in the score) or the point failed (scored inf)
    assert wide["warnings"] or wide["failed"]


def test_a_choice_at_the_end_of_the_grid_is_noted():
    X, y = blobs(spread=0.05)                      # every sigma scores 0: the middle wins
    inner = select(X, y, grid={"sigma": [0.25, 0.5, 1.0]})
    assert inner.params["sigma"] == 0.5 and inner.notes == []
    X, y = blobs()
    edge = select(X, y, grid={"sigma": [0.01, 0.02, 0.05]})     # all far too narrow
    assert edge.params["sigma"] == 0.05 == min(edge.scores, key=lambda s: s["val_error"])[
        "params"]["sigma"]
    assert "largest of its grid" in edge.notes[0] and "NOTE" in edge.summary()
    lam = select(X, y, grid={"sigma": [1.5], "lam": [0.0, 1e-6, 1e-3]})
    assert lam.params["lam"] != 0 or lam.notes == []       # lam = 0 is no edge to extend


def test_extend_walks_out_of_a_grid_that_was_too_narrow():
    X, y = blobs()
    s = select(X, y, grid={"sigma": [0.01, 0.02, 0.05]}, extend=4, val_fraction=0.25, seed=3)
    sigmas = [sc["params"]["sigma"] for sc in s.scores]
    assert sigmas[:4] == pytest.approx([0.01, 0.02, 0.05, 0.125])    # steps of 0.05 / 0.02
    assert len(sigmas) > 4
    val = stratified_indices(y, 40, 3)
    fit = np.setdiff1d(np.arange(len(y)), val)
    for sc in s.scores:                                # the new points are scored like the rest
        assert sc["val_error"] == pytest.approx(
            oracle_error(X[fit], y[fit], X[val], y[val], sc["params"]["sigma"]), abs=1e-12)
    assert s.best["val_error"] == min(sc["val_error"] for sc in s.scores)
    # here it stops once the best is inside (0.3125 ties 0.78125: the smaller middle)
    assert s.params["sigma"] == pytest.approx(0.3125) and s.params["sigma"] < max(sigmas)
    assert s.notes == []
    with pytest.raises(InputError, match="extend"):
        select(X, y, grid={"sigma": [1.0]}, extend=-1)

import warnings

import numpy as np
import pytest
import scipy.linalg as sl
from sklearn.kernel_ridge import KernelRidge
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks

from kernelfit import KernelInterpolant, KernelInterpolantClassifier, Options
from kernelfit.errors import (
    AccuracyWarning,
    DuplicatePointsError,
    InputError,
    NotPositiveDefiniteError,
    PlanError,
)


# With default parameters (issue 7 B): scikit-learn's data has duplicate rows with
# equal targets (iris) and K singular to rounding under the default scale; both are
# answered by the minimum-norm solution K^+ y. jitter="auto" is checked as well.
@parametrize_with_checks([KernelInterpolant(), KernelInterpolantClassifier(),
                          KernelInterpolant(options=Options(jitter="auto")),
                          KernelInterpolantClassifier(options=Options(jitter="auto"))])
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)   # singular K: warned, by design
        check(estimator)


@pytest.mark.parametrize("Est", [KernelInterpolant, KernelInterpolantClassifier])
def test_parameter_validation_follows_scikit_learn(Est):
    # every parameter has a constraint, and a bad one raises InvalidParameterError
    # with scikit-learn's message (our ParameterError is also an InputError)
    check_param_validation(Est.__name__, Est())


@pytest.mark.parametrize("params, says", [
    (dict(sigma="5"), "'sigma' parameter"), (dict(lam=None), "'lam' parameter"),
    (dict(kernel="polynomial", degree=2.5), "'degree' parameter"),
    (dict(degree=0), "'degree' parameter"), (dict(coef0=np.nan), "'coef0' parameter"),
    (dict(gamma=np.inf), "'gamma' parameter"), (dict(lam=np.inf), "'lam' parameter"),
    (dict(coef0=np.inf), "'coef0' parameter"),
    (dict(kernel="rbf"), "'kernel' parameter"), (dict(solver="qr"), "'solver' parameter"),
    (dict(gamma=1.0, sigma=2.0), "not both"), (dict(options={"dtype": "float32"}), "'options'"),
])
def test_bad_parameters_raise_typed_errors(rng, params, says):
    from sklearn.utils._param_validation import InvalidParameterError

    from kernelfit.errors import ParameterError
    X, y = rng.random((10, 3)), rng.random(10)
    with pytest.raises(ParameterError, match=says) as err:
        KernelInterpolant(**params).fit(X, y)
    assert isinstance(err.value, InputError) and isinstance(err.value, InvalidParameterError)


@pytest.mark.parametrize("sigma", [1e-300, 1e300])
def test_unrepresentable_bandwidth_is_a_typed_error(rng, sigma):
    X, y = rng.random((10, 3)), rng.random(10)
    with pytest.raises(InputError, match="outside what float64 can use"):
        KernelInterpolant(sigma=sigma).fit(X, y)


def test_precomputed_kernel_in_cross_val_score_matches_kernel_ridge(rng):
    from sklearn.model_selection import cross_val_predict, cross_val_score
    X, y = rng.random((60, 4)), rng.standard_normal(60)
    K = rbf_kernel(X, gamma=2.0)
    est = KernelInterpolant(kernel="precomputed")
    assert est.__sklearn_tags__().input_tags.pairwise
    assert not KernelInterpolant().__sklearn_tags__().input_tags.pairwise
    scores = cross_val_score(est, K, y, cv=3)
    ref = KernelRidge(kernel="precomputed", alpha=1e-12)
    np.testing.assert_allclose(scores, cross_val_score(ref, K, y, cv=3), rtol=1e-4)
    pred = cross_val_predict(est, K, y, cv=3)
    # oracle of one fold, directly: K[test, train] solve(K[train, train], y[train])
    te, tr = np.arange(20), np.arange(20, 60)
    direct = K[np.ix_(te, tr)] @ sl.solve(K[np.ix_(tr, tr)], y[tr], assume_a="pos")
    np.testing.assert_allclose(pred[te], direct, rtol=1e-6, atol=1e-8)
    labels = (X[:, 0] > 0.5).astype(int)
    clf = KernelInterpolantClassifier(kernel="precomputed")
    Y1 = np.eye(2)[labels[tr]]                  # one-hot, solved directly on the fold
    direct = np.argmax(K[np.ix_(te, tr)] @ sl.solve(K[np.ix_(tr, tr)], Y1), axis=1)
    assert cross_val_score(clf, K, labels, cv=3)[0] == pytest.approx(np.mean(direct
                                                                              == labels[te]))


def test_alpha_equals_scipy_solve(rng):
    X, y = rng.random((200, 5)), rng.standard_normal(200)
    m = KernelInterpolant(gamma=0.5, options=Options(dtype="float64", tile_size=48)).fit(X, y)
    ref = sl.solve(rbf_kernel(X, gamma=0.5), y)
    # cond(K) ~ 7e8 here: compare alpha at the scale of its largest entry
    np.testing.assert_allclose(m.dual_coef_, ref, rtol=0, atol=1e-7 * np.abs(ref).max())
    np.testing.assert_allclose(m.predict(X), y, atol=1e-8)       # it interpolates
    assert m.train_error_ < 1e-8 and m.relative_residual_ < 1e-8
    K = rbf_kernel(X, gamma=0.5)
    assert m.norm_ == pytest.approx(np.sqrt(m.dual_coef_ @ K @ m.dual_coef_), rel=1e-8)


def test_linear_kernel_gives_the_minimum_norm_least_squares_solution(rng):
    # d > n: X w = y has many solutions; SGD from 0 (and the interpolant) picks the
    # minimum-norm one, w = X^T alpha, which is lstsq's.
    X, Y = rng.standard_normal((40, 100)), rng.standard_normal((40, 3))
    m = KernelInterpolant(kernel="linear", options=Options(dtype="float64")).fit(X, Y)
    w = X.T @ m.dual_coef_
    w_ref = np.linalg.lstsq(X, Y, rcond=None)[0]
    np.testing.assert_allclose(w, w_ref, atol=1e-10)
    assert m.norm_ == pytest.approx(np.linalg.norm(w_ref), rel=1e-9)


def test_multi_output_and_ridge_match_kernel_ridge(rng):
    X, Y = rng.random((150, 4)), rng.standard_normal((150, 2))
    m = KernelInterpolant(gamma=2.0, lam=0.1, options=Options(dtype="float64")).fit(X, Y)
    ref = KernelRidge(alpha=0.1, kernel="rbf", gamma=2.0).fit(X, Y)
    Xt = rng.random((30, 4))
    np.testing.assert_allclose(m.predict(Xt), ref.predict(Xt), atol=1e-9)
    assert m.dual_coef_.shape == (150, 2)


@pytest.mark.parametrize("solver", ["cg", "cg-matrix-free"])
def test_cg_solvers_match_cholesky(rng, solver):
    X, y = rng.random((300, 6)), rng.integers(0, 3, 300)
    opts = Options(dtype="float64", tol=1e-10, max_iter=4000)
    a = KernelInterpolantClassifier(gamma=1.0, lam=1e-3, options=opts).fit(X, y)
    b = KernelInterpolantClassifier(gamma=1.0, lam=1e-3, solver=solver, options=opts).fit(X, y)
    np.testing.assert_allclose(b.dual_coef_, a.dual_coef_, rtol=1e-5, atol=1e-7)
    assert b.n_iter_ > 0


def test_digits_classifier_interpolates_and_generalizes(digits):
    X, y, _ = digits
    c = KernelInterpolantClassifier().fit(X[:1300], y[:1300])
    assert c.train_error_ == 0.0
    assert 1 - c.score(X[1300:], y[1300:]) < 0.05
    assert c.norm_ > 0 and c.relative_residual_ < 1e-2
    assert set(c.timings_) >= {"gram", "factor", "solve", "residual"}


def test_float32_with_refinement_is_accurate(rng):
    X, y = rng.random((300, 10)), rng.standard_normal(300)
    f32 = Options(dtype="float32")
    m0 = KernelInterpolant(gamma=0.5, lam=1e-4, options=f32).fit(X, y)
    m2 = KernelInterpolant(gamma=0.5, lam=1e-4, options=f32.replace(refine_steps=3)).fit(X, y)
    assert m2.relative_residual_ < m0.relative_residual_ / 100


# ---- bad input: typed errors that say what to do -------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_rejected(rng, bad):
    X, y = rng.random((10, 3)), rng.random(10)
    X[4, 1] = bad
    with pytest.raises(InputError, match="(NaN|infinity).*Impute or drop"):
        KernelInterpolant().fit(X, y)


def test_shape_errors(rng):
    X, y = rng.random((10, 3)), rng.random(10)
    with pytest.raises(InputError, match="inconsistent numbers of samples"):
        KernelInterpolant().fit(X, y[:9])
    with pytest.raises(InputError, match="Expected 2D array"):
        KernelInterpolant().fit(X[:, 0], y)
    with pytest.raises(InputError, match="minimum of 2"):
        KernelInterpolant().fit(X[:1], y[:1])
    with pytest.raises(InputError):
        KernelInterpolant().fit(X[:0], y[:0])
    m = KernelInterpolant().fit(X, y)
    with pytest.raises(InputError, match="features"):
        m.predict(rng.random((2, 4)))


def test_duplicates_rejected_with_remedies(rng):
    X, y = rng.random((10, 3)), rng.random(10)
    X[6] = X[2]
    with pytest.raises(DuplicatePointsError, match="rows 6=2.*lam > 0.*jitter"):
        KernelInterpolant().fit(X, y)
    KernelInterpolant(lam=1e-3).fit(X, y)                       # a remedy works
    KernelInterpolant(options=Options(jitter="auto")).fit(X, y)


def test_not_positive_definite_in_float32(rng):
    # a wide Gaussian on nearby points: PD in exact arithmetic, not once rounded.
    # Default: the minimum-norm solution, warned and its rank recorded; strict: the
    # typed error with its remedies.
    X, y = rng.random((300, 2)) * 1e-2, rng.random(300)
    with pytest.warns(AccuracyWarning, match=r"rank \d+ of 300.*dtype='float64'"):
        m = KernelInterpolant(sigma=10.0, options=Options(dtype="float32")).fit(X, y)
    assert m.solver_info_["rank"] < 300 and not m.converged_
    with pytest.raises(NotPositiveDefiniteError, match="float64"):
        KernelInterpolant(sigma=10.0, options=Options(dtype="float32", strict=True)).fit(X, y)


def test_request_that_does_not_fit_fails_fast(rng):
    X, y = rng.random((1000, 3)), rng.random(1000)
    with pytest.raises(PlanError, match="cg-matrix-free"):
        KernelInterpolant(options=Options(memory_limit=2_000_000)).fit(X, y)


def test_bad_parameters(rng):
    X, y = rng.random((10, 3)), rng.random(10)
    with pytest.raises(InputError, match="solver"):
        KernelInterpolant(solver="qr").fit(X, y)
    with pytest.raises(InputError, match="lam"):
        KernelInterpolant(lam=-1.0).fit(X, y)


@pytest.mark.parametrize("overwrite", [False, True])
def test_precomputed_gram_matches_points(rng, overwrite):
    X = rng.normal(size=(80, 6))
    Xt = rng.normal(size=(30, 6))
    y = rng.integers(0, 3, 80)
    on_points = KernelInterpolantClassifier(sigma=2.0).fit(X, y)
    kern = on_points.kernel_
    K = kern.block(X, X)
    K_keep = K.copy()
    opts = Options(overwrite_gram=overwrite)
    pre = KernelInterpolantClassifier(kernel="precomputed", options=opts).fit(K, y)
    np.testing.assert_allclose(pre.dual_coef_, on_points.dual_coef_, rtol=1e-6, atol=1e-8)
    assert pre.norm_ == pytest.approx(on_points.norm_, rel=1e-8)
    np.testing.assert_array_equal(pre.predict(kern.block(Xt, X)), on_points.predict(Xt))
    # a copy is factored unless the caller hands K over
    assert np.array_equal(K, K_keep) != overwrite


def test_precomputed_rejects_non_square(rng):
    with pytest.raises(InputError, match="square"):
        KernelInterpolantClassifier(kernel="precomputed").fit(rng.normal(size=(10, 4)),
                                                             np.arange(10) % 2)


def test_plan_does_not_count_a_precomputed_k_twice():
    from kernelfit.engine.plan import plan_fit
    opts = Options(dtype="float32", memory_limit=int(12e9))
    # n = 50,000: K is 10 GB; handed over in place it is already paid for
    plan = plan_fit(50_000, 0, 10, options=opts, gram_allocated=True)
    assert plan.gram_bytes == 0 and plan.total_bytes < 2e9
    with pytest.raises(PlanError, match="50,000"):
        plan_fit(50_000, 0, 10, options=opts.replace(memory_limit=int(3e8)), gram_allocated=True)
    with pytest.raises(PlanError):                 # a fresh K does not fit next to the rest
        plan_fit(50_000, 3072, 10, options=opts.replace(storage="memory"))

"""No silent wrong answer from a solve (issue 7, A2/A5/A11/B).

Every test here failed on the code before the fix: CG returned NaN, a solve
that missed its tolerance said nothing, singular K raised or returned garbage,
an all-zero y gave a NaN residual, an asymmetric K was accepted.
"""

import warnings

import numpy as np
import pytest
import scipy.linalg as sl
from sklearn.metrics.pairwise import rbf_kernel

from kernelfit import KernelInterpolant, KernelInterpolantClassifier, Options
from kernelfit.engine.solvers.solve import residual_limit, solve_stored
from kernelfit.errors import (
    AccuracyError,
    AccuracyWarning,
    DuplicatePointsError,
    InputError,
    NonFiniteError,
    NotPositiveDefiniteError,
    PlanError,
    SingularKernelError,
)


def _wide(rng, n=120, d=6):
    """Points whose Gaussian K at sigma = 1000 is all ones to ~1e-5: singular in float64."""
    return rng.random((n, d)), rng.integers(0, 3, n)


# ---- A2: CG ----------------------------------------------------------------------------

def test_cg_on_a_singular_stored_k_gives_k_plus_y(rng):
    # (issue 16) CG's iterate drifts along a singular K's null space; the stored K is
    # answered by K^+ y, as the Cholesky path answers it, with its rank.
    X, y = _wide(rng)
    with pytest.warns(AccuracyWarning, match=r"singular to working precision \(rank \d+ of 120"):
        m = KernelInterpolantClassifier(sigma=1000.0, solver="cg").fit(X, y)
    with pytest.warns(AccuracyWarning, match="singular to working precision"):
        ref = KernelInterpolantClassifier(sigma=1000.0).fit(X, y)
    assert m.solver_info_["rank"] == ref.solver_info_["rank"] < 120
    np.testing.assert_allclose(m.dual_coef_, ref.dual_coef_, rtol=1e-10,
                               atol=1e-10 * np.abs(ref.dual_coef_).max())
    assert m.solver_info_["replaced"]["preconditioner"]["mu"] > 0 and m.warnings_
    with pytest.raises(SingularKernelError, match=r"lam > 0"):      # strict: no K^+ y
        KernelInterpolantClassifier(sigma=1000.0, solver="cg",
                                    options=Options(strict=True)).fit(X, y)


def test_cg_on_a_singular_matrix_free_k_is_refused(rng):
    X, y = _wide(rng)
    with pytest.raises(SingularKernelError, match="cg-matrix-free.*solver='cholesky' gives"):
        KernelInterpolantClassifier(sigma=1000.0, solver="cg-matrix-free").fit(X, y)


def test_cg_that_stops_at_max_iter_warns_and_records(rng):
    X, y = rng.random((200, 5)), rng.standard_normal(200)
    opts = Options(max_iter=5, tol=1e-10)
    with pytest.warns(AccuracyWarning, match="CG did not converge.*max_iter"):
        m = KernelInterpolant(gamma=1.0, solver="cg", options=opts).fit(X, y)
    assert m.n_iter_ == 5 and not m.converged_
    assert any("max_iter" in w for w in m.warnings_)
    with pytest.raises(AccuracyError, match="CG did not converge"):
        KernelInterpolant(gamma=1.0, solver="cg", options=opts.replace(strict=True)).fit(X, y)


def test_converged_cg_raises_no_warning(rng):
    X, y = rng.random((150, 4)), rng.standard_normal(150)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)
        m = KernelInterpolant(gamma=2.0, lam=1e-2, solver="cg",
                              options=Options(tol=1e-10, max_iter=2000)).fit(X, y)
    assert m.converged_ and m.warnings_ == []
    ref = sl.solve(rbf_kernel(X, gamma=2.0) + 1e-2 * np.eye(150), y, assume_a="pos")
    np.testing.assert_allclose(m.dual_coef_, ref, rtol=1e-7, atol=1e-9)


# ---- B: the minimum-norm solution of a singular K ----------------------------------------

def test_singular_k_gives_the_minimum_norm_solution(rng):
    # The wide bandwidth makes K singular to working precision: the answer is
    # K^+ y at the reported cutoff (oracle: NumPy's own pseudo-inverse).
    X, y = rng.random((80, 3)), rng.standard_normal(80)
    with pytest.warns(AccuracyWarning, match=r"singular to working precision \(rank \d+ of 80"):
        m = KernelInterpolant(sigma=1e3).fit(X, y)
    info = m.solver_info_
    K = m.kernel_.block(X, X)
    rtol = info["cutoff"] / max(abs(info["eigenvalue_max"]), abs(info["eigenvalue_min"]))
    ref = np.linalg.pinv(K, rtol=rtol, hermitian=True) @ y
    np.testing.assert_allclose(m.dual_coef_, ref, rtol=1e-6, atol=1e-8 * np.abs(ref).max())
    assert 1 <= info["rank"] < 80
    with pytest.raises(NotPositiveDefiniteError):                 # strict: the typed error
        KernelInterpolant(sigma=1e3, options=Options(strict=True)).fit(X, y)


def test_duplicates_with_agreeing_targets_give_the_interpolant_of_the_distinct_points(rng):
    X, y = rng.random((40, 3)), rng.standard_normal(40)
    Xd, yd = np.vstack([X, X[:4]]), np.concatenate([y, y[:4]])
    with pytest.warns(AccuracyWarning, match="rank 40 of 44"):
        m = KernelInterpolant(gamma=1.0).fit(Xd, yd)
    ref = KernelInterpolant(gamma=1.0).fit(X, y)
    assert m.solver_info_["rank"] == 40
    np.testing.assert_allclose(m.predict(Xd), yd, atol=1e-7)     # it interpolates
    Xt = rng.random((10, 3))
    np.testing.assert_allclose(m.predict(Xt), ref.predict(Xt), atol=1e-6)
    assert m.norm_ == pytest.approx(ref.norm_, rel=1e-6)
    # the oracle for K^+ y: LAPACK's minimum-norm least squares
    lst = np.linalg.lstsq(rbf_kernel(Xd, gamma=1.0), yd, rcond=1e-10)[0]
    np.testing.assert_allclose(m.dual_coef_, lst, atol=1e-6 * np.abs(lst).max())


def test_duplicates_with_different_targets_have_no_interpolant(rng):
    X, y = rng.random((20, 3)), rng.standard_normal(20)
    X[7] = X[3]
    with pytest.raises(DuplicatePointsError, match="7=3.*different targets"):
        KernelInterpolant().fit(X, y)


def test_rows_equal_only_in_float32_are_duplicates_there(rng):
    X, y = rng.random((30, 4)), rng.standard_normal(30)
    X[9] = X[2] + 1e-12                       # distinct in float64, equal once rounded
    with pytest.raises(DuplicatePointsError, match="float32.*9=2"):
        KernelInterpolant(gamma=1.0, options=Options(dtype="float32")).fit(X, y)
    with pytest.warns(AccuracyWarning, match="singular"):       # not duplicates in float64,
        KernelInterpolant(gamma=1.0, options=Options(dtype="float64")).fit(X, y)  # but close


def test_auto_jitter_rejects_an_inaccurate_factor(digits):
    # Exact duplicates with different targets: no interpolant. Here K factors at
    # jitter 0 with a pivot of rounding size (the old code accepted it: norm 4e7,
    # residual 3e-2); the answer must be the ridge solution with the jitter it
    # reports (oracle: SciPy), and the rejected attempt recorded.
    X, y, _ = digits
    X, y = X[:30].copy(), y[:30].astype(float)
    X[23], y[23] = X[19], y[19] + 1
    m = KernelInterpolant(options=Options(jitter="auto")).fit(X, y)
    j = m.solver_info_["jitter"]
    assert j > 0 and m.converged_ and m.norm_ < 100
    assert m.solver_info_["jitter_attempts"][0]["rejected"] == "inaccurate solve"
    K = m.kernel_.block(X, X)
    np.testing.assert_allclose(m.dual_coef_, sl.solve(K + j * np.eye(30), y), rtol=1e-6)
    assert m.relative_residual_ < residual_limit("float64", 30)


def test_nearly_singular_cholesky_is_never_silent(rng):
    X, y = _wide(rng, n=150)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = KernelInterpolantClassifier(sigma=1000.0).fit(X, y)
    assert any(issubclass(w.category, AccuracyWarning) for w in caught)
    assert m.warnings_ and not m.converged_
    assert m.relative_residual_ > m.solver_info_["residual_limit"]


# ---- A5: non-finite values ---------------------------------------------------------------

def test_overflowing_x_is_refused_before_k_is_built(rng):
    X, y = rng.random((20, 3)) * 1e200, rng.random(20)
    with pytest.raises(InputError, match="overflow.*Rescale X"):
        KernelInterpolant().fit(X, y)
    with pytest.raises(InputError, match="float32.*dtype='float64'"):
        KernelInterpolant(options=Options(dtype="float32")).fit(X / 1e200 * 1e19, y)


def test_overflowing_kernel_is_a_typed_error_not_a_nan_model(rng):
    X, y = rng.random((20, 3)) * 10, rng.random(20)
    with pytest.raises(NonFiniteError, match="non-finite"):
        KernelInterpolant(kernel="polynomial", degree=400, gamma=1.0).fit(X, y)


def test_solve_stored_refuses_a_nan_solution(rng):
    K = rbf_kernel(rng.random((30, 2)), gamma=1.0)
    K[4, 9] = K[9, 4] = np.nan
    with pytest.raises(NonFiniteError, match=r"K\[4, 9\]"):
        solve_stored(K, rng.random(30), lam=1e-3)


# ---- A11 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("solver", ["cholesky", "cg", "cg-matrix-free"])
def test_all_zero_targets_give_a_zero_model_and_a_defined_residual(rng, solver):
    X = rng.random((40, 3))
    m = KernelInterpolant(gamma=1.0, lam=1e-3, solver=solver).fit(X, np.zeros(40))
    assert m.relative_residual_ == 0.0 and m.train_error_ == 0.0 and m.norm_ == 0.0
    np.testing.assert_array_equal(m.dual_coef_, 0.0)


def test_asymmetric_precomputed_k_is_refused(rng):
    X = rng.random((30, 3))
    K = rbf_kernel(X, gamma=1.0)
    K[3, 17] += 0.2
    with pytest.raises(InputError, match=r"symmetric.*K\[3, 17\]"):
        KernelInterpolant(kernel="precomputed").fit(K, rng.random(30))
    K = rbf_kernel(X, gamma=1.0)
    K[3, 17] += 1e-14                          # rounding-level: accepted
    KernelInterpolant(kernel="precomputed", lam=1e-6).fit(K, rng.random(30))


def test_residual_limit_per_dtype():
    assert residual_limit("float64", 100) == pytest.approx(1e-7)
    assert residual_limit(np.float32, 10_000) == pytest.approx(1e-2)


def test_pinv_is_refused_when_too_large():
    from kernelfit.engine.sizes import PINV_MAX_N
    from kernelfit.engine.solvers.pinv import plan_pinv
    with pytest.raises(PlanError, match="lam > 0"):
        plan_pinv(PINV_MAX_N + 1)
    with pytest.raises(PlanError, match="MB"):
        plan_pinv(1000, Options(memory_limit=10**6))


def test_indefinite_precomputed_k_is_not_pseudo_inverted(rng):
    # symmetric, but with a clearly negative eigenvalue: no kernel matrix, no K^+ y
    B = rng.standard_normal((20, 20))
    K = B + B.T
    with pytest.raises(NotPositiveDefiniteError, match="not positive semi-definite"):
        KernelInterpolant(kernel="precomputed").fit(K, rng.random(20))

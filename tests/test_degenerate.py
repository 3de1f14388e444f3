"""Degenerate answers are errors or loud warnings (issue 16).

One test per reproduction: each failed on the code before the fix (a tiny
bandwidth's 90% test error with exit 0 and no warning; lam = 1e16 reading 10%
train error for 4%; CG 1e7 away from lstsq on a singular K; a float32 alpha
305% off with converged=True; NaN norms for targets near 1e300).
"""

import json
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
import scipy.linalg as sl
from sklearn.datasets import load_digits
from sklearn.metrics.pairwise import rbf_kernel

from kernelfit import KernelInterpolant, KernelInterpolantClassifier, Options
from kernelfit.cli import main
from kernelfit.engine import sizes
from kernelfit.engine.solvers.condition import COND_EPS_LIMIT, inverse_one_norm, pivot_bound
from kernelfit.engine.solvers.solve import residual_limit, solve_stored
from kernelfit.errors import AccuracyError, AccuracyWarning, SingularKernelError

SMALL = ["--quiet", "--n-train", "300", "--n-test", "100"]


def _digits(n=300):
    X, y = load_digits(return_X_y=True)
    return X[:n] / 16, y[:n]


@contextmanager
def _no_accuracy_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)
        yield


# ---- 1. constant predictions: K the identity, K all ones ---------------------------------------

@pytest.mark.parametrize("scale", [["--sigma", "0.001"], ["--gamma", "1e308"]])
def test_run_with_a_tiny_bandwidth_warns_that_k_is_the_identity(tmp_path, capsys, scale):
    out = tmp_path / "run.json"
    assert main(["run", *SMALL, *scale, "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    # what the warning is about: every test point is predicted the same class
    assert record["test_error"] > 0.8 and record["converged"] is False
    assert any("identity to working precision" in w and "--sigma auto" in w
               and "median" in w for w in record["warnings"])
    assert "WARNING" in capsys.readouterr().out
    assert main(["run", *SMALL, *scale, "--strict"]) == 2
    assert "identity to working precision" in capsys.readouterr().err


def test_tiny_bandwidth_in_the_api_warns_and_predictions_vanish():
    X, y = _digits()
    with pytest.warns(AccuracyWarning, match="identity to working precision"):
        m = KernelInterpolantClassifier(sigma=1e-3).fit(X[:200], y[:200])
    assert m.train_error_ == 0.0                          # it memorized the points ...
    F = m.decision_function(X[200:])                      # ... and predicts 0 elsewhere
    np.testing.assert_array_equal(F, 0.0)
    with pytest.raises(AccuracyError, match="identity to working precision"):
        KernelInterpolantClassifier(sigma=1e-3, options=Options(strict=True)).fit(X, y)
    with _no_accuracy_warning():                          # the default scale is not flagged
        KernelInterpolantClassifier().fit(X[:200], y[:200])


@pytest.mark.parametrize("solver", ["cholesky", "cg", "cg-matrix-free", "pcg"])
def test_identity_k_is_flagged_by_every_solver(solver):
    X, y = _digits(150)
    with pytest.warns(AccuracyWarning, match="identity to working precision"):
        KernelInterpolantClassifier(sigma=1e-3, solver=solver).fit(X, y)


def test_all_ones_k_warns_that_every_decision_value_is_the_same():
    X, y = _digits(120)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = KernelInterpolantClassifier(gamma=1e-300).fit(X, y)   # K = 1 1^T exactly
    said = " ".join(str(w.message) for w in caught)
    assert "same decision values" in said and "median" in said
    F = m.decision_function(X)
    assert np.ptp(F, axis=0).max() <= 1e-8 * np.abs(F).max()     # the warning is right
    assert np.unique(m.predict(X)).size == 1


# ---- 2. lam or jitter that swamps K; the train error without cancellation ---------------------

def test_train_error_at_lam_1e16_matches_a_float64_oracle():
    X, y = _digits()
    K = rbf_kernel(X, gamma=1.0 / (X.shape[1] * X.var()))
    Y = np.eye(10)[y]
    alpha = np.linalg.solve(K + 1e16 * np.eye(len(X)), Y)
    K_alpha = K @ alpha                                   # the oracle: no cancellation
    with pytest.warns(AccuracyWarning, match="lam = 1e.16 is 1.0e.16 x K's largest diagonal"):
        m = KernelInterpolantClassifier(lam=1e16).fit(X, y)
    assert m.train_error_ == np.mean(np.argmax(K_alpha, axis=1) != y)
    assert 0 < m.train_error_ < 0.1                       # was 0.100, actual 0.040
    with pytest.warns(AccuracyWarning, match="swamp|neither an interpolant"):
        sol = solve_stored(K.copy(), Y, lam=1e16)
    np.testing.assert_allclose(sol.K_alpha, K_alpha, rtol=1e-10)
    assert sol.norm == pytest.approx(np.sqrt(np.sum(alpha * K_alpha)), rel=1e-10)


@pytest.mark.parametrize("flag", ["--lam", "--jitter"])
def test_run_with_a_lam_or_jitter_of_1e308_warns_that_it_swamps_k(tmp_path, flag):
    out = tmp_path / "run.json"
    assert main(["run", *SMALL, flag, "1e308", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["converged"] is False
    assert any("neither an interpolant" in w and "x K's largest diagonal entry" in w
               for w in record["warnings"])
    assert 0 < record["norm"] < 1e-300 and record["train_error"] < 0.5   # was 0 and 100%


@pytest.mark.parametrize("params", [dict(lam=1e308), dict(options=Options(jitter=1e308))])
def test_lam_or_jitter_of_1e308_gives_the_figures_of_k_y_over_lam(params):
    # alpha = Y / 1e308 exactly in float64, so K alpha = K Y / 1e308: the oracle.
    X, y = _digits()
    Y = np.eye(10)[y]
    with pytest.warns(AccuracyWarning, match="neither an interpolant"):
        m = KernelInterpolantClassifier(**params).fit(X, y)
    KY = m.kernel_.block(X, X) @ Y
    assert m.train_error_ == np.mean(np.argmax(KY, axis=1) != y)
    assert m.norm_ == pytest.approx(np.sqrt(np.sum(Y * KY)) / 1e308, rel=1e-6)


def test_a_moderate_lam_is_not_flagged():
    X, y = _digits(200)
    with _no_accuracy_warning():
        KernelInterpolantClassifier(lam=0.1).fit(X, y)


def test_jitter_that_moves_an_interpolant_off_its_targets_warns(rng):
    X, y = rng.random((60, 3)), rng.standard_normal(60)
    with pytest.warns(AccuracyWarning, match="lam = 0 asks for an interpolant.*Drop the jitter"):
        m = KernelInterpolant(gamma=1.0, options=Options(jitter=1e-2)).fit(X, y)
    K = rbf_kernel(X, gamma=1.0)
    oracle = np.linalg.norm(K @ sl.solve(K + 1e-2 * np.eye(60), y) - y) / np.linalg.norm(y)
    assert m.train_error_ == pytest.approx(oracle, rel=1e-8) and oracle > 1e-3
    with _no_accuracy_warning():                          # a rounding-sized jitter is fine
        KernelInterpolant(gamma=10.0, options=Options(jitter=1e-15)).fit(X, y)


# ---- 3. K^+ y for every solver on a singular K, or the typed refusal --------------------------

@pytest.mark.parametrize("solver, outcome", [("cg", "K^+ y"), ("pcg", "K^+ y"),
                                             ("cg-matrix-free", "refused")])
def test_singular_linear_kernel_gives_lstsq_min_norm_or_refuses(rng, solver, outcome):
    # n = 200 > d = 20: K = X X^T has rank 20. Oracle: LAPACK's minimum-norm lstsq.
    X, Xt = rng.standard_normal((200, 20)), rng.standard_normal((30, 20))
    Y = rng.standard_normal((200, 3))
    K = X @ X.T
    ref = Xt @ X.T @ np.linalg.lstsq(K, Y, rcond=None)[0]
    model = KernelInterpolant(kernel="linear", solver=solver)
    if outcome == "refused":
        with pytest.raises(SingularKernelError, match=r"singular to working precision.*"
                           r"solver='cholesky' gives the minimum-norm solution K\^\+ y.*lam > 0"):
            model.fit(X, Y)
        return
    with pytest.warns(AccuracyWarning, match=r"singular to working precision \(rank 20 of 200"):
        model.fit(X, Y)
    pred = model.predict(Xt)
    assert np.linalg.norm(pred - ref) <= 1e-6 * np.linalg.norm(ref)
    assert model.solver_info_["replaced"]["iterations"] > 0       # CG ran, then was replaced


def test_run_linear_cg_is_the_minimum_norm_solution(tmp_path):
    out, ref = tmp_path / "cg.json", tmp_path / "chol.json"
    for solver, path in (("cg", out), ("cholesky", ref)):
        assert main(["run", *SMALL, "--kernel", "linear", "--solver", solver,
                     "--json", str(path)]) == 0
    cg, chol = json.loads(out.read_text()), json.loads(ref.read_text())
    assert cg["norm"] == pytest.approx(chol["norm"], rel=1e-6)        # was 2.6e8
    assert cg["test_error"] == chol["test_error"] and cg["train_error"] == chol["train_error"]
    assert any("singular to working precision" in w for w in cg["warnings"])


# ---- 4. a condition estimate after every Cholesky ---------------------------------------------

def _ill_conditioned_40():
    """40 points, a wide Gaussian: cond(K) ~1.9e8 (NumPy), a smooth target."""
    X = np.random.default_rng(3).random((40, 3))
    return X, np.sin(X.sum(axis=1)), 0.5 / 0.85**2


def test_float32_cholesky_of_an_ill_conditioned_k_warns_with_its_condition_estimate():
    X, y, gamma = _ill_conditioned_40()
    K = rbf_kernel(X, gamma=gamma)
    cond = np.linalg.cond(K)
    assert 1e8 < cond < 1e9
    with pytest.warns(AccuracyWarning, match=r"condition number about .*--dtype float64.*"
                                             r"--refine-steps.*--lam"):
        m = KernelInterpolant(gamma=gamma, options=Options(dtype="float32")).fit(X, y)
    # the residual gate alone passes it: only the condition estimate speaks
    assert m.converged_ and m.relative_residual_ <= m.solver_info_["residual_limit"]
    ref = np.linalg.lstsq(K, y, rcond=None)[0]
    assert np.linalg.norm(m.dual_coef_ - ref) > 0.1 * np.linalg.norm(ref)   # and it is right
    est = m.solver_info_["cond_estimate"]
    assert cond / 10 <= est <= 40 * cond and "pocon" in m.solver_info_["cond_estimate_method"]
    with _no_accuracy_warning():                                   # the remedy it names
        KernelInterpolant(gamma=gamma, options=Options(dtype="float64")).fit(X, y)


def test_well_conditioned_float32_cholesky_does_not_warn():
    X, y, _ = _ill_conditioned_40()
    gamma = 0.5 / 0.25**2
    cond = np.linalg.cond(rbf_kernel(X, gamma=gamma))
    assert cond * np.finfo(np.float32).eps < COND_EPS_LIMIT / 20
    with _no_accuracy_warning():
        m = KernelInterpolant(gamma=gamma, options=Options(dtype="float32")).fit(X, y)
    assert cond / 10 <= m.solver_info_["cond_estimate"] <= 40 * cond


def test_tiled_cholesky_on_disk_gives_a_lower_bound_that_still_warns(tmp_path):
    X, y, gamma = _ill_conditioned_40()
    cond = np.linalg.cond(rbf_kernel(X, gamma=gamma).astype(np.float32).astype(np.float64))
    opts = Options(dtype="float32", storage="disk", tile_size=16, scratch_dir=str(tmp_path))
    with pytest.warns(AccuracyWarning, match="condition number about"):
        m = KernelInterpolant(gamma=gamma, options=opts).fit(X, y)
    info = m.solver_info_
    assert info["storage"] == "disk tiles" and "lower bound" in info["cond_estimate_method"]
    assert 1.0 < info["cond_estimate"] <= cond * 1.01
    L = np.linalg.cholesky(rbf_kernel(X, gamma=gamma))
    assert pivot_bound(np.diag(L)) <= np.linalg.cond(L @ L.T) * (1 + 1e-6)


@pytest.mark.parametrize("gamma", [0.3, 3.0, 30.0])
def test_inverse_one_norm_is_attained_and_close_to_the_true_norm(gamma):
    """Against ||K^-1||_1 from NumPy's inverse: never above it (each step's value is a
    norm actually attained), and within the factor 3 the estimator promises."""
    X = np.random.default_rng(5).random((200, 4))
    K = rbf_kernel(X, gamma=gamma) + 1e-9 * np.eye(200)
    c = sl.cho_factor(K)
    est = inverse_one_norm(lambda Y: sl.cho_solve(c, Y), 200)
    true = np.abs(np.linalg.inv(K)).sum(axis=0).max()
    assert true / 3 <= est <= true * (1 + 1e-8)


def test_a_k_too_large_for_one_lapack_call_still_gets_a_true_estimate(monkeypatch):
    """Past one LAPACK call (n > 46,340; here the limit is lowered so 40 points pass it)
    the factor is tiled and ?pocon cannot run: the Hager-Higham estimate on the tiled
    solves must still see the ill-conditioning the pivot bound can miss."""
    X, y, gamma = _ill_conditioned_40()
    monkeypatch.setattr(sizes, "LP64_ELEMENTS", 1000)         # 40 x 40 = 1,600 elements
    K = rbf_kernel(X, gamma=gamma)
    cond_1 = np.linalg.cond(K, 1)
    with _no_accuracy_warning():                     # cond x eps(float64) is small
        m = KernelInterpolant(gamma=gamma, options=Options(dtype="float64")).fit(X, y)
    info = m.solver_info_
    assert "Hager" in info["cond_estimate_method"]
    assert cond_1 / 3 <= info["cond_estimate"] <= cond_1 * 1.01
    with pytest.warns(AccuracyWarning, match="condition number about"):
        m32 = KernelInterpolant(gamma=gamma, options=Options(dtype="float32")).fit(X, y)
    assert m32.solver_info_["cond_estimate"] > 1e6     # float32 solves, the same verdict


def test_run_records_the_condition_estimate(tmp_path):
    out = tmp_path / "run.json"
    assert main(["run", *SMALL, "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    X, _ = _digits()
    cond = np.linalg.cond(rbf_kernel(X, gamma=record["kernel"]["gamma"]))
    assert cond / 10 <= record["cond_estimate"] <= 300 * cond
    assert record["cond_estimate_method"] == "LAPACK ?pocon (1-norm)"


# ---- 5. targets near 1e300 -------------------------------------------------------------------

@pytest.mark.parametrize("solver, dtype", [("cholesky", "float64"), ("cholesky", "float32"),
                                           ("cg", "float64"), ("pcg", "float64"),
                                           ("cg-matrix-free", "float64")])
def test_targets_near_1e300_give_finite_norm_and_residual(rng, solver, dtype):
    X, y = rng.random((60, 3)), rng.standard_normal(60)
    big = 2.0**996                                    # ~6.7e299: a scaling that is exact
    K = rbf_kernel(X, gamma=1.0)
    a = sl.solve(K + 1e-2 * np.eye(60), y)            # the oracle, in scaled float64
    opts = Options(dtype=dtype, tol=1e-5)
    with _no_accuracy_warning():                      # no false "ill-conditioned" warning
        m = KernelInterpolant(gamma=1.0, lam=1e-2, solver=solver, options=opts).fit(X, y * big)
        small = KernelInterpolant(gamma=1.0, lam=1e-2, solver=solver, options=opts).fit(X, y)
    assert np.isfinite(m.norm_) and np.isfinite(m.relative_residual_)
    rtol = 1e-3 if dtype == "float32" else 1e-4 if solver != "cholesky" else 1e-9
    assert m.norm_ / big == pytest.approx(np.sqrt(a @ K @ a), rel=rtol)
    np.testing.assert_allclose(m.predict(X[:5]) / big, K[:5] @ a, rtol=rtol)
    # every solve is linear in y: y * 2^996 gives the same digits as y, the residual too
    np.testing.assert_allclose(m.dual_coef_ / big, small.dual_coef_, rtol=1e-14)
    assert m.relative_residual_ == pytest.approx(small.relative_residual_, rel=1e-12)
    assert m.norm_ / big == pytest.approx(small.norm_, rel=1e-14)
    assert m.relative_residual_ <= max(2e-5, residual_limit(dtype, 60))


def test_a_norm_beyond_float64_is_said(rng):
    K = 4.0 * np.eye(30)                               # alpha = y / 4, norm = ||y|| / 2
    y = np.full(30, 1e308)
    with pytest.warns(AccuracyWarning, match="overflows float64"):
        m = KernelInterpolant(kernel="precomputed").fit(K, y)
    assert np.isinf(m.norm_) and np.all(np.isfinite(m.dual_coef_))

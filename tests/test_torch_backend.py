"""The PyTorch backend: the same exact solve on a torch device (CPU here, CUDA when present)."""

import numpy as np
import pytest
import scipy.linalg as sl
from conftest import backend_params

from kernelfit import Options
from kernelfit.engine.kernels import make_kernel
from kernelfit.errors import InputError, NotPositiveDefiniteError
from kernelfit.model import KernelInterpolant, KernelInterpolantClassifier

torch = pytest.importorskip("torch")

TORCH = backend_params("torch-cpu", "torch-cuda")


@pytest.mark.parametrize("backend_case", TORCH, indirect=True)
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "polynomial"])
def test_alpha_matches_scipy_solve(rng, backend_case, kernel):
    X = rng.normal(size=(120, 7))
    Y = rng.normal(size=(120, 3))
    kern = make_kernel(kernel, sigma=3.0) if kernel != "polynomial" else make_kernel(
        kernel, gamma=0.1, degree=2)
    lam = 1e-3 if kernel == "polynomial" else 0.0      # degree-2 K on 120 points is singular
    m = KernelInterpolant(kernel, gamma=kern.gamma, degree=2, lam=lam,
                          options=backend_case.options(dtype="float64")).fit(X, Y)
    K = kern.block(X, X)
    alpha = sl.solve(K + lam * np.eye(120), Y, assume_a="pos")
    np.testing.assert_allclose(m.dual_coef_, alpha, rtol=1e-6, atol=1e-8)
    assert m.relative_residual_ < 1e-10
    assert m.norm_ == pytest.approx(np.sqrt(np.sum(alpha * (K @ alpha))), rel=1e-8)
    Xt = rng.normal(size=(9, 7))
    np.testing.assert_allclose(m.predict(Xt), kern.block(Xt, X) @ alpha, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend_case", TORCH, indirect=True)
def test_float32_classifier_agrees_with_numpy_backend(backend_case, digits):
    X, y, _ = digits
    on_torch = KernelInterpolantClassifier(sigma=2.0, options=backend_case.options(
        dtype="float32")).fit(X[:800], y[:800])
    on_numpy = KernelInterpolantClassifier(sigma=2.0, options=Options(dtype="float32")).fit(
        X[:800], y[:800])
    assert on_torch.train_error_ == 0.0
    assert np.mean(on_torch.predict(X[800:]) == on_numpy.predict(X[800:])) > 0.995
    assert on_torch.norm_ == pytest.approx(on_numpy.norm_, rel=1e-3)


def test_not_positive_definite_and_auto_jitter(rng):
    X = rng.normal(size=(50, 3))
    # a bandwidth far above the data's spread: K is all ones to float32 precision
    opts = Options(backend="torch", device="cpu", dtype="float32", jitter=0.0)
    with pytest.raises(NotPositiveDefiniteError, match="float32.*pivot"):
        KernelInterpolant(sigma=1e3, options=opts).fit(X, rng.normal(size=50))
    m = KernelInterpolant(sigma=1e3, options=opts.replace(jitter="auto")).fit(
        X, rng.normal(size=50))
    assert m.solver_info_["jitter"] > 0 and m.solver_info_["jitter_attempts"]


def test_backend_errors(rng):
    X, y = rng.normal(size=(20, 2)), rng.normal(size=20)
    with pytest.raises(InputError, match="backend"):
        KernelInterpolant(options=Options(backend="jax")).fit(X, y)
    with pytest.raises(InputError, match="cholesky"):
        KernelInterpolant(solver="cg", options=Options(backend="torch", device="cpu")).fit(X, y)


def test_memory_limit_is_respected(rng):
    # the torch solve plans against Options.memory_limit as the NumPy planner does
    from kernelfit.errors import PlanError
    X, y = rng.normal(size=(300, 4)), rng.normal(size=300)
    opts = Options(backend="torch", device="cpu", dtype="float64", memory_limit=500_000)
    with pytest.raises(PlanError, match="is available"):
        KernelInterpolant(options=opts).fit(X, y)
    m = KernelInterpolant(lam=1e-3, options=opts.replace(memory_limit=50_000_000)).fit(X, y)
    assert m.relative_residual_ < 1e-10 and m.converged_


def test_all_zero_targets_and_accuracy_record(rng):
    X = rng.normal(size=(30, 3))
    m = KernelInterpolant(options=Options(backend="torch", device="cpu")).fit(X, np.zeros(30))
    assert m.relative_residual_ == 0.0 and m.converged_ and m.warnings_ == []


def test_auto_jitter_rejects_an_inaccurate_factor_on_torch(digits):
    # exact duplicates with different targets: torch's potrf factors this K at jitter 0
    # (the old code accepted it: residual 2.8e-2); that solve must be rejected
    X, y, _ = digits
    X, y = X[:60].copy(), y[:60].astype(float)
    X[40], y[40] = X[48], y[48] + 1
    m = KernelInterpolant(options=Options(backend="torch", device="cpu", dtype="float64",
                                          jitter="auto")).fit(X, y)
    j = m.solver_info_["jitter"]
    assert j > 0 and m.solver_info_["jitter_attempts"][0]["rejected"] == "inaccurate solve"
    assert m.relative_residual_ < 1e-9
    K = m.kernel_.block(X, X)
    np.testing.assert_allclose(m.dual_coef_, sl.solve(K + j * np.eye(60), y), rtol=1e-6)


def test_singular_k_gets_the_same_minimum_norm_answer_as_numpy(rng):
    from kernelfit.errors import AccuracyWarning
    X, y = rng.normal(size=(50, 3)), rng.normal(size=50)
    opts = Options(backend="torch", device="cpu", dtype="float64")
    with pytest.warns(AccuracyWarning, match=r"rank \d+ of 50"):
        t = KernelInterpolant(sigma=1e3, options=opts).fit(X, y)
    with pytest.warns(AccuracyWarning, match=r"rank \d+ of 50"):
        n = KernelInterpolant(sigma=1e3, options=Options(dtype="float64")).fit(X, y)
    # K is built by another GEMM on torch: alpha ~ 1e10 amplifies its rounding (measured
    # 3e-4 relative), the fitted function much less
    assert t.solver_info_["rank"] == n.solver_info_["rank"] < 50
    assert t.norm_ == pytest.approx(n.norm_, rel=1e-3)
    np.testing.assert_allclose(t.dual_coef_, n.dual_coef_, atol=3e-3 * np.abs(n.dual_coef_).max())
    np.testing.assert_allclose(t.predict(X), n.predict(X), atol=1e-2)
    with pytest.raises(NotPositiveDefiniteError):
        KernelInterpolant(sigma=1e3, options=opts.replace(strict=True)).fit(X, y)

import warnings

import numpy as np
import pytest
from sklearn.metrics.pairwise import polynomial_kernel, rbf_kernel

from kernelfit.engine.kernels import Kernel, make_kernel, row_sq_norms
from kernelfit.errors import InputError


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_gaussian_matches_sklearn(rng, dtype, tol):
    X, Y = rng.random((40, 7)), rng.random((30, 7))
    k = make_kernel("gaussian", gamma=0.7)
    got = k.block(X.astype(dtype), Y.astype(dtype))
    assert got.dtype == dtype
    np.testing.assert_allclose(got, rbf_kernel(X, Y, gamma=0.7), atol=tol)


def test_sigma_and_gamma_are_the_same_scale(rng):
    X = rng.random((10, 3))
    a = make_kernel("gaussian", sigma=2.0).block(X, X)
    b = make_kernel("gaussian", gamma=1 / 8).block(X, X)
    np.testing.assert_allclose(a, b)


def test_laplacian_is_euclidean(rng):
    X, Y = rng.random((12, 5)), rng.random((9, 5))
    k = make_kernel("laplacian", sigma=3.0)
    D = np.linalg.norm(X[:, None] - Y[None], axis=-1)
    np.testing.assert_allclose(k.block(X, Y), np.exp(-D / 3.0), atol=1e-12)


def test_polynomial_and_linear_match_sklearn(rng):
    X, Y = rng.random((8, 4)), rng.random((6, 4))
    k = make_kernel("polynomial", gamma=0.5, degree=3, coef0=2.0)
    np.testing.assert_allclose(k.block(X, Y), polynomial_kernel(X, Y, degree=3, gamma=0.5,
                                                                coef0=2.0))
    np.testing.assert_allclose(make_kernel("linear").block(X, Y), X @ Y.T)


def test_distance_clamped_at_zero_for_identical_points():
    # ||x||^2 + ||x||^2 - 2<x,x> can round below 0 in float32; k must stay <= 1.
    X = np.full((3, 784), 0.37, dtype=np.float32)
    K = make_kernel("gaussian", gamma=1.0).block(X, X)
    assert np.all(K <= 1.0) and np.all(K > 0.99)


def test_default_scale_is_sklearn_scale_rule(rng):
    X = rng.random((50, 10))
    k = make_kernel("gaussian", X=X)
    assert k.gamma == pytest.approx(1 / (10 * X.var()))


def test_diag_is_exact(rng):
    X = rng.random((5, 3))
    for name in ("gaussian", "laplacian", "linear", "polynomial"):
        k = make_kernel(name, gamma=0.3)
        np.testing.assert_allclose(k.diag(X), np.diag(k.block(X, X)), atol=1e-12)


def test_row_sq_norms_float64_accumulation():
    X = np.full((2, 100_000), 0.1, dtype=np.float32)
    assert row_sq_norms(X).dtype == np.float64
    np.testing.assert_allclose(row_sq_norms(X), 100_000 * np.float64(np.float32(0.1)) ** 2)


@pytest.mark.parametrize("kw", [dict(name="cubic"), dict(gamma=-1.0), dict(gamma=np.nan),
                                dict(name="polynomial", degree=0)])
def test_bad_kernel_parameters(kw):
    with pytest.raises(InputError):
        Kernel(**kw)


def test_gamma_and_sigma_together_rejected():
    with pytest.raises(InputError, match="not both"):
        make_kernel("gaussian", gamma=1.0, sigma=1.0)


# ---- scales and parameters that the working dtype cannot use: typed errors ----------

@pytest.mark.parametrize("sigma", [1e-300, 1e300, 1e-160])
def test_unrepresentable_sigma(sigma):
    with pytest.raises(InputError, match="outside what float64 can use"):
        make_kernel("gaussian", sigma=sigma)


@pytest.mark.parametrize("kw, says", [
    (dict(sigma="5"), "sigma must be a positive finite number"),
    (dict(gamma=np.nan), "gamma must be a positive finite number"),
    (dict(name="polynomial", degree=2.5), "integer >= 1"),
    (dict(name="polynomial", degree=True), "integer >= 1"),
    (dict(name="polynomial", coef0=np.inf, gamma=1.0), "coef0"),
    (dict(name="rbf", gamma=1.0), "unknown kernel"),
])
def test_bad_make_kernel_parameters(kw, says):
    with pytest.raises(InputError, match=says):
        make_kernel(**kw)


def test_scale_must_fit_the_working_dtype():
    k = make_kernel("gaussian", sigma=1e-100)        # gamma = 5e199: fine in float64
    k.check_dtype("float64")
    with pytest.raises(InputError, match="outside what float32 can hold.*float64"):
        k.check_dtype("float32")
    make_kernel("linear").check_dtype("float32")


def test_far_points_give_exact_zeros_without_warnings():
    k = make_kernel("gaussian", gamma=1e300)
    X = np.array([[0.0, 0.0], [1.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(k.block(X, X), np.eye(2))

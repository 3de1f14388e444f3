import numpy as np
import pytest
import scipy.linalg as sl
from conftest import random_spd

from kernelfit.engine.sizes import max_tile
from kernelfit.engine.solvers.cholesky import cholesky_solve, factor, restore_lower, tiled_cholesky
from kernelfit.errors import InputError, NotPositiveDefiniteError


@pytest.mark.parametrize("n,tile", [(1, 1), (64, 64), (100, 7), (100, 33), (257, 64), (300, 1000)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_factor_equals_scipy(rng, n, tile, dtype):
    K = random_spd(rng, n)
    A = K.astype(dtype)
    f = tiled_cholesky(A, tile=tile)
    L_ref = sl.cholesky(K.astype(dtype), lower=True)
    tol = 1e-10 if dtype == np.float64 else 2e-3
    np.testing.assert_allclose(np.tril(A), L_ref, atol=tol * np.abs(L_ref).max())
    # the strict upper triangle still holds K, untouched
    assert np.array_equal(np.triu(A, 1), np.triu(K.astype(dtype), 1))
    assert np.array_equal(f.k_diag, np.diag(K.astype(dtype)).astype(np.float64))


@pytest.mark.parametrize("tile", [16, 50, 200])
def test_solve_equals_scipy_multi_rhs(rng, tile):
    K = random_spd(rng, 150)
    Y = rng.standard_normal((150, 4))
    A = K.copy()
    f = tiled_cholesky(A, tile=tile, shift=0.5)
    np.testing.assert_allclose(f.solve(Y), sl.solve(K + 0.5 * np.eye(150), Y), rtol=1e-9)
    np.testing.assert_allclose(cholesky_solve(A, Y[:, 0], tile=tile),
                               sl.solve(K + 0.5 * np.eye(150), Y[:, 0]), rtol=1e-9)


def test_not_positive_definite_names_the_pivot(rng):
    n = 60
    K = random_spd(rng, n)
    K[40, :] = K[10, :]
    K[:, 40] = K[:, 10]          # row 40 duplicates row 10: singular from pivot 40 on
    K[40, 40] = K[10, 10]
    A = K.copy()
    with pytest.raises(NotPositiveDefiniteError) as exc:
        tiled_cholesky(A, tile=16)
    assert exc.value.pivot == 40
    assert "lam > 0" in str(exc.value) and "jitter" in str(exc.value)
    assert isinstance(exc.value, np.linalg.LinAlgError)


def test_float32_message_suggests_float64():
    A = np.array([[1.0, 2.0], [2.0, 1.0]], dtype=np.float32)
    with pytest.raises(NotPositiveDefiniteError, match="float64"):
        tiled_cholesky(A)


def test_restore_lower_undoes_a_partial_factorization(rng):
    K = random_spd(rng, 90)
    A = K.copy()
    tiled_cholesky(A, tile=20)
    restore_lower(A, np.diag(K))
    assert np.array_equal(A, K)


def test_auto_jitter_retries_and_records(rng):
    X = rng.random((30, 3))
    X[7] = X[3]                                   # duplicate point: K singular
    K = np.exp(-((X[:, None] - X[None]) ** 2).sum(-1))
    A = K.copy()
    f = factor(A, jitter="auto", tile=8)
    assert f.info["jitter"] > 0
    assert f.info["jitter_attempts"] and f.info["jitter_attempts"][0]["jitter"] == 0.0
    Y = rng.standard_normal(30)
    np.testing.assert_allclose(f.solve(Y), sl.solve(K + f.shift * np.eye(30), Y), rtol=1e-6)


def test_max_tile_keeps_every_call_below_2_31_elements():
    for n in (10, 60_000, 200_000):
        assert max(n, 8192) * max_tile(n) < 2**31


def test_rejects_non_contiguous_or_integer():
    with pytest.raises(InputError):
        tiled_cholesky(np.eye(4, dtype=np.int64))
    with pytest.raises(InputError):
        tiled_cholesky(np.asfortranarray(np.eye(4) + np.tri(4) * 0.1))

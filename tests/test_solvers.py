import numpy as np
import pytest
import scipy.linalg as sl
from conftest import random_spd
from sklearn.metrics.pairwise import rbf_kernel

from kernelfit.gram import build_gram
from kernelfit.kernels import make_kernel
from kernelfit.options import Options
from kernelfit.solvers.cg import NystromPreconditioner, block_cg
from kernelfit.solvers.cholesky import tiled_cholesky
from kernelfit.solvers.operators import KernelOperator, StoredOperator
from kernelfit.solvers.refine import refine
from kernelfit.solvers.solve import solve_matrix_free, solve_stored


def test_stored_operator_is_K_times_v(rng):
    K = random_spd(rng, 1100)      # > 2 chunks of 512 rows, last one ragged
    V = rng.standard_normal((1100, 3))
    op = StoredOperator(K, np.diag(K), shift=0.25)
    np.testing.assert_allclose(op @ V, (K + 0.25 * np.eye(1100)) @ V, rtol=1e-11)
    idx = [0, 5, 1099]
    np.testing.assert_allclose(op.columns(idx), K[:, idx])


def test_stored_operator_after_factorization(rng):
    K = random_spd(rng, 200)
    A = K.copy()
    f = tiled_cholesky(A, tile=64, shift=1.0)
    v = rng.standard_normal(200)
    np.testing.assert_allclose(StoredOperator(A, f.k_diag, f.shift) @ v, (K + np.eye(200)) @ v)


def test_kernel_operator_matrix_free(rng):
    X = rng.random((120, 4))
    k = make_kernel("gaussian", gamma=2.0)
    op = KernelOperator(k, X, shift=0.1, block_size=50)
    V = rng.standard_normal((120, 2))
    np.testing.assert_allclose(op @ V, (rbf_kernel(X, gamma=2.0) + 0.1 * np.eye(120)) @ V,
                               atol=1e-12)


def test_refinement_reaches_float64_accuracy_from_a_float32_factor(rng):
    X = rng.random((400, 8))
    K64 = rbf_kernel(X, gamma=0.5) + 1e-3 * np.eye(400)
    K32 = K64.astype(np.float32)
    A = K32.copy()
    f = tiled_cholesky(A, tile=128)
    op = StoredOperator(A, f.k_diag)           # the float32-stored K, applied in float64
    Y = rng.standard_normal((400, 2))
    x0 = f.solve(Y)
    x, hist = refine(f.solve, op, Y, x0, steps=4)
    final = np.linalg.norm(op @ x - Y) / np.linalg.norm(Y)
    assert hist[0] > 1e-6
    assert final < 1e-10 < hist[0]
    np.testing.assert_allclose(x, np.linalg.solve(K32.astype(np.float64), Y), rtol=1e-7)


@pytest.mark.parametrize("precond", [False, True])
def test_block_cg_solves_each_column(rng, precond):
    X = rng.random((300, 5))
    K = rbf_kernel(X, gamma=1.0) + 1e-2 * np.eye(300)
    op = StoredOperator(K, np.diag(K))
    Y = rng.standard_normal((300, 3))
    pre = NystromPreconditioner(op, 60) if precond else None
    x, info = block_cg(op, Y, tol=1e-10, max_iter=3000, precond=pre)
    assert info["converged"]
    np.testing.assert_allclose(x, sl.solve(K, Y), rtol=1e-6, atol=1e-8)


def test_nystrom_preconditioner_cuts_iterations(rng):
    X = rng.random((400, 5))
    K = rbf_kernel(X, gamma=1.0) + 1e-4 * np.eye(400)
    op = StoredOperator(K, np.diag(K))
    Y = rng.standard_normal((400, 1))
    _, plain = block_cg(op, Y, tol=1e-8, max_iter=5000)
    _, pre = block_cg(op, Y, tol=1e-8, max_iter=5000, precond=NystromPreconditioner(op, 100))
    assert pre["converged"] and pre["iterations"] < plain["iterations"] / 3


def test_solvers_agree(rng):
    X = rng.random((250, 6))
    k = make_kernel("gaussian", gamma=0.8)
    Y = rng.standard_normal((250, 2))
    ref = sl.solve(rbf_kernel(X, gamma=0.8) + 1e-3 * np.eye(250), Y)
    o64 = Options(dtype="float64", tol=1e-12, max_iter=5000, block_size=64)
    for solver in ("cholesky", "cg"):
        sol = solve_stored(build_gram(X, k, options=o64), Y, lam=1e-3, solver=solver, options=o64)
        np.testing.assert_allclose(sol.alpha, ref, rtol=1e-6, atol=1e-8)
    mf = solve_matrix_free(k, X, Y, lam=1e-3, options=o64)
    np.testing.assert_allclose(mf.alpha, ref, rtol=1e-6, atol=1e-8)
    assert mf.iterations > 0 and mf.relative_residual < 1e-10


def test_nystrom_preconditioner_of_a_low_rank_k_is_finite(rng):
    # K = 1 1^T (rank 1, no shift): the sketch captures all of it, so the missed tail
    # s[-1] is 0; mu must be floored, not 0 (the old code divided by it: NaN)
    K = np.ones((120, 120))
    op = StoredOperator(K, np.diag(K))
    pre = NystromPreconditioner(op, 30)
    assert 0 < pre.mu < 1e-9 * 120
    R = rng.standard_normal((120, 2))
    assert np.all(np.isfinite(pre(R)))
    # a consistent singular system is solved (K x = y), finitely
    y = np.full(120, 2.0)
    x, info = block_cg(op, y, tol=1e-10, max_iter=50, precond=pre)
    assert info["converged"] and np.all(np.isfinite(x))
    np.testing.assert_allclose(K @ x, y, rtol=1e-9)


def test_block_cg_flags_a_breakdown_instead_of_stepping():
    # an indefinite operator: p^T K p = 0 on the first direction
    K = np.array([[0.0, 1.0], [1.0, 0.0]])
    x, info = block_cg(StoredOperator(K, np.diag(K)), np.array([1.0, 0.0]), max_iter=10)
    assert info["breakdown"] and not info["converged"] and np.all(np.isfinite(x))

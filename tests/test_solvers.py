import numpy as np
import pytest
import scipy.linalg as sl
from conftest import random_spd
from sklearn.metrics.pairwise import rbf_kernel

from kernelfit.engine.gram.panels import build_gram
from kernelfit.engine.kernels import make_kernel
from kernelfit.engine.solvers.cg import block_cg
from kernelfit.engine.solvers.cholesky import tiled_cholesky
from kernelfit.engine.solvers.precond import TopEigenPreconditioner
from kernelfit.engine.solvers.refine import refine
from kernelfit.engine.solvers.solve import solve_matrix_free, solve_stored
from kernelfit.engine.storage.operators import KernelOperator, StoredOperator
from kernelfit.errors import AccuracyWarning
from kernelfit.options import Options


def test_stored_operator_is_K_times_v(rng):
    K = random_spd(rng, 1100)      # > 2 chunks of 512 rows, last one ragged
    V = rng.standard_normal((1100, 3))
    op = StoredOperator(K, np.diag(K), shift=0.25)
    np.testing.assert_allclose(op @ V, (K + 0.25 * np.eye(1100)) @ V, rtol=1e-11)
    idx = [0, 5, 1099]
    np.testing.assert_allclose(op.row_block(idx), K[idx])


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
    np.testing.assert_allclose(op.row_block([3, 0, 119]), rbf_kernel(X, gamma=2.0)[[3, 0, 119]],
                               atol=1e-14)


def test_refinement_reaches_float64_accuracy_from_a_float32_factor(rng):
    X = rng.random((400, 8))
    K64 = rbf_kernel(X, gamma=0.5) + 1e-3 * np.eye(400)
    K32 = K64.astype(np.float32)
    A = K32.copy()
    f = tiled_cholesky(A, tile=128)
    op = StoredOperator(A, f.k_diag)           # the float32-stored K, applied in float64
    Y = rng.standard_normal((400, 2))
    x0 = f.solve(Y)
    x, hist, _ = refine(f.solve, op, Y, x0, steps=4)
    final = np.linalg.norm(op @ x - Y) / np.linalg.norm(Y)
    assert hist[0] > 1e-6
    assert final < 1e-10 < hist[0]
    np.testing.assert_allclose(x, np.linalg.solve(K32.astype(np.float64), Y), rtol=1e-7)


def _eigen(op, rank, seed=0):
    """The eigen preconditioner of ``op`` with ``rank`` directions from 2 rank columns."""
    return TopEigenPreconditioner(op.row_block, op.shape[0], op.shift, sketch=2 * rank,
                                  rank=rank, seed=seed, eps=np.finfo(np.float64).eps)


def _digits(digits, n, scale=1.0):
    """The first n digits, their one-hot labels and the default gamma * scale."""
    X, _, Y = digits
    X = X[:n]
    return X, Y[:n], scale / (X.shape[1] * X.var())


@pytest.mark.parametrize("precond", [False, True])
def test_block_cg_solves_each_column(rng, precond):
    X = rng.random((300, 5))
    K = rbf_kernel(X, gamma=1.0) + 1e-2 * np.eye(300)
    op = StoredOperator(K, np.diag(K))
    Y = rng.standard_normal((300, 3))
    pre = _eigen(op, 60) if precond else None
    x, info = block_cg(op, Y, tol=1e-10, max_iter=3000, precond=pre)
    assert info["converged"]
    np.testing.assert_allclose(x, sl.solve(K, Y), rtol=1e-6, atol=1e-8)


def test_eigen_preconditioner_cuts_cg_iterations_on_digits(digits):
    # Gaussian K of 400 digits, lam = 0: plain CG against the cg solver's default
    # preconditioner (300 directions), both through solve_stored.
    X, Y, gamma = _digits(digits, 400)
    k = make_kernel("gaussian", gamma=gamma)
    its = {}
    for precond in ("none", "eigen"):
        o = Options(dtype="float64", tol=1e-8, max_iter=2000, precond=precond)
        sol = solve_stored(build_gram(X, k, options=o), Y, solver="cg", options=o)
        assert sol.converged
        its[precond] = sol.iterations
    assert sol.info["preconditioner"]["rank"] == 300
    assert its["eigen"] * 5 < its["none"]


@pytest.mark.parametrize("precond", ["eigen", "jacobi", "none"])
def test_solvers_agree(rng, precond):
    X = rng.random((250, 6))
    k = make_kernel("gaussian", gamma=0.8)
    Y = rng.standard_normal((250, 2))
    ref = sl.solve(rbf_kernel(X, gamma=0.8) + 1e-3 * np.eye(250), Y)
    o64 = Options(dtype="float64", tol=1e-12, max_iter=5000, block_size=64, precond=precond,
                  precond_rank=40 if precond == "eigen" else None)
    for solver in ("cholesky", "cg"):
        sol = solve_stored(build_gram(X, k, options=o64), Y, lam=1e-3, solver=solver, options=o64)
        np.testing.assert_allclose(sol.alpha, ref, rtol=1e-6, atol=1e-8)
    assert sol.info["preconditioner"]["preconditioner"] == precond
    mf = solve_matrix_free(k, X, Y, lam=1e-3, options=o64)
    np.testing.assert_allclose(mf.alpha, ref, rtol=1e-6, atol=1e-8)
    assert mf.iterations > 0 and mf.relative_residual < 1e-10
    # The same preconditioner: for eigen, the same sketch from recomputed kernel blocks.
    stored, free = sol.info["preconditioner"], mf.info["preconditioner"]
    assert free.keys() == stored.keys()
    for key, value in stored.items():
        assert free[key] == (pytest.approx(value, rel=1e-10) if isinstance(value, float)
                             else value)


def test_eigen_preconditioner_of_a_low_rank_k_is_finite(rng):
    # K = 1 1^T (rank 1, no shift): one direction, eigenvalue n; mu is that eigenvalue
    # (what is left past it is 0, and 0 would divide by zero).
    K = np.ones((120, 120))
    op = StoredOperator(K, np.diag(K))
    pre = _eigen(op, 15)
    assert pre.rank == 1 and pre.lam[0] == pytest.approx(120.0, rel=1e-12)
    assert pre.mu == pytest.approx(120.0, rel=1e-12)
    R = rng.standard_normal((120, 2))
    np.testing.assert_allclose(pre(R), R / 120.0 - np.outer(np.ones(120), R.sum(0)) / 120**2 / 2,
                               rtol=1e-10, atol=1e-14)
    # a consistent singular system is solved (K x = y), finitely
    y = np.full(120, 2.0)
    x, info = block_cg(op, y, tol=1e-10, max_iter=50, precond=pre)
    assert info["converged"] and np.all(np.isfinite(x))
    np.testing.assert_allclose(K @ x, y, rtol=1e-9)


@pytest.mark.parametrize("solver", ["cg", "cg-matrix-free"])
def test_cg_on_a_very_wide_bandwidth_with_lam_0_stays_finite_and_small(solver, digits):
    # digits at 1e-4 x the default gamma: K is all but ones, numerically of low rank;
    # with lam = 0 nothing but the preconditioner's floor keeps mu > 0.
    X, Y, gamma = _digits(digits, 400, scale=1e-4)
    k = make_kernel("gaussian", gamma=gamma)
    o = Options(dtype="float64", tol=1e-8, max_iter=300)
    with pytest.warns(AccuracyWarning):
        sol = (solve_stored(build_gram(X, k, options=o), Y, solver="cg", options=o)
               if solver == "cg" else solve_matrix_free(k, X, Y, options=o))
    p = sol.info["preconditioner"]
    assert 0 < p["mu"] < 1e-9 * p["top_eigenvalue"] and np.isfinite(p["mu"])
    assert np.all(np.isfinite(sol.alpha))
    # far better than alpha = 0 (relative residual 1): the preconditioner did its work
    assert sol.relative_residual < 1e-3


def test_block_cg_flags_a_breakdown_instead_of_stepping():
    # an indefinite operator: p^T K p = 0 on the first direction
    K = np.array([[0.0, 1.0], [1.0, 0.0]])
    x, info = block_cg(StoredOperator(K, np.diag(K)), np.array([1.0, 0.0]), max_iter=10)
    assert info["breakdown"] and not info["converged"] and np.all(np.isfinite(x))

"""Block PCG on a stored K (kernelfit.engine.solvers.pcg) and its preconditioners."""

import json
import warnings

import numpy as np
import pytest
import scipy.linalg as sl
from conftest import random_spd
from sklearn.metrics.pairwise import rbf_kernel

from kernelfit.engine.solvers.cg import block_cg
from kernelfit.engine.solvers.pcg import PanelOperator, ValidationStop, pcg_solve
from kernelfit.engine.solvers.precond import (
    JacobiPreconditioner,
    TopEigenPreconditioner,
    choose_sketch,
    sketch_bytes,
)
from kernelfit.engine.solvers.solve import solve_stored
from kernelfit.errors import AccuracyError, AccuracyWarning, InputError, NonFiniteError
from kernelfit.model import KernelInterpolant
from kernelfit.options import Options

# Convergence tolerance per stored dtype: float32 products leave ~1e-7 relative
# rounding per pass, so a float32 solve is asked for what it can deliver.
TOL = {"float64": 1e-10, "float32": 1e-5}


def gaussian_K(rng, n, d=6, gamma=0.5):
    X = rng.random((n, d))
    return rbf_kernel(X, gamma=gamma)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("c", [1, 10])
@pytest.mark.parametrize("precond", ["eigen", "jacobi", "none"])
def test_pcg_agrees_with_scipy_solve(rng, dtype, c, precond):
    n = 200
    # Uneven diagonal: Jacobi has something to do, and the oracle is K's own rounding.
    D = np.diag(rng.uniform(0.5, 2.0, n))
    K = (D @ random_spd(rng, n, cond_shift=30.0) @ D).astype(dtype)
    Y = rng.standard_normal((n, c))
    sol = solve_stored(K, Y, solver="pcg",
                       options=Options(tol=TOL[dtype], max_iter=2000, precond=precond))
    expected = sl.solve(K.astype(np.float64), Y, assume_a="pos")
    assert sol.converged and not sol.warnings
    assert sol.info["stopping"].startswith("relative residual")
    err = np.linalg.norm(sol.alpha - expected) / np.linalg.norm(expected)
    assert err < 100 * TOL[dtype]
    assert sol.relative_residual < 10 * TOL[dtype]
    np.testing.assert_allclose(sol.K_alpha, K.astype(np.float64) @ sol.alpha,
                               rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-5)


def test_pcg_with_ridge_matches_the_shifted_system(rng):
    K = gaussian_K(rng, 400)
    K0 = K.copy()
    Y = rng.standard_normal((400, 3))
    sol = solve_stored(K, Y, lam=1e-2, solver="pcg", options=Options(tol=1e-12))
    np.testing.assert_allclose(sol.alpha, sl.solve(K + 1e-2 * np.eye(400), Y), rtol=1e-8,
                               atol=1e-8)
    assert sol.shift == 1e-2
    # K is left as it was: pcg never overwrites the caller's K.
    np.testing.assert_array_equal(K, K0)


def test_eigen_preconditioner_cuts_iterations_on_a_kernel_matrix(rng):
    K = gaussian_K(rng, 300)
    Y = rng.standard_normal((300, 2))
    its = {}
    for precond, rank in (("eigen", None), ("eigen", 100), ("jacobi", None), ("none", None)):
        _, info = pcg_solve(K, Y, shift=1e-3, options=Options(
            tol=1e-8, max_iter=5000, precond=precond, precond_rank=rank))
        assert info["converged"]
        its[precond if rank is None else f"{precond}{rank}"] = info["iterations"]
    # A Gaussian K's diagonal is constant: Jacobi is plain CG up to scaling (and
    # rounding, which shifts a long CG run by a few iterations).
    assert abs(its["jacobi"] - its["none"]) <= 0.05 * its["none"]
    # The automatic sketch at n = 300 is n / 4 = 75 columns; a larger one does more.
    assert its["eigen"] * 3 < its["none"]
    assert its["eigen100"] * 10 < its["none"]


def test_top_eigen_preconditioner_is_exact_on_a_low_rank_K(rng):
    n, r = 500, 40
    F = rng.standard_normal((n, r))
    K = F @ F.T                                      # rank 40: a 120-column sketch sees all of it
    pre = TopEigenPreconditioner(lambda idx: K[idx], n, 1.0, sketch=120, rank=60, seed=1,
                                 eps=np.finfo(np.float64).eps)
    top = np.linalg.eigvalsh(K)[::-1][:r]
    assert pre.rank == r                             # the decay floor dropped the null space
    np.testing.assert_allclose(pre.lam, top, rtol=1e-8)
    # M = U diag(lam + mu) U^T + mu (I - U U^T): M^{-1} M = I.
    U, mu = pre.U, pre.mu
    M = U @ np.diag(pre.lam + mu) @ U.T + mu * (np.eye(n) - U @ U.T)
    np.testing.assert_allclose(pre(M), np.eye(n), atol=1e-8)
    assert mu == pytest.approx(1.0 + max(top[-1], np.sqrt(n) * np.finfo(float).eps * top[0]))
    # The sketch saw all of K: M = K + mu I, inverted densely.
    R = rng.standard_normal((n, 3))
    np.testing.assert_allclose(pre(R), np.linalg.inv(K + mu * np.eye(n)) @ R, rtol=1e-8,
                               atol=1e-12)


def test_eigen_preconditioner_matches_a_dense_nystrom_oracle(rng, digits):
    # Gaussian K of 300 digits (full rank): the Nyström approximation C W_q^+ C^T of the
    # sampled columns, built and eigendecomposed densely with numpy, and M^{-1} as the
    # inverse of the dense M = U diag(s + mu) U^T + mu (I - U U^T).
    X = digits[0][:300]
    n, shift = len(X), 1e-3
    K = rbf_kernel(X, gamma=1.0 / (X.shape[1] * X.var()))
    pre = TopEigenPreconditioner(lambda idx: K[idx], n, shift, sketch=60, rank=30, seed=3,
                                 eps=np.finfo(np.float64).eps)
    q, S = pre.rank, pre.index
    assert q == 30 and len(S) == 60
    lw, V = np.linalg.eigh(K[np.ix_(S, S)])
    Vq, lq = V[:, ::-1][:, :q], lw[::-1][:q]
    C = K[:, S]
    s, U = np.linalg.eigh(C @ Vq @ np.diag(1 / lq) @ Vq.T @ C.T)
    s, U = s[::-1][:q], U[:, ::-1][:, :q]
    np.testing.assert_allclose(pre.lam, s, rtol=1e-8)
    np.testing.assert_allclose(pre.U @ pre.U.T, U @ U.T, atol=1e-8)
    mu = shift + max(s[-1], np.sqrt(n) * np.finfo(float).eps * s[0])
    assert pre.mu == pytest.approx(mu, rel=1e-8)
    M = U @ np.diag(s + mu) @ U.T + mu * (np.eye(n) - U @ U.T)
    R = rng.standard_normal((n, 4))
    np.testing.assert_allclose(pre(R), np.linalg.inv(M) @ R, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(pre(R[:, 0]), np.linalg.inv(M) @ R[:, 0], rtol=1e-7, atol=1e-9)


def test_eigen_preconditioner_of_a_zero_sketch_is_a_scaled_identity(rng):
    # The sampled rows of K are zero: no direction to flatten, M = mu I with mu the
    # shift (1 without one: any multiple of the identity preconditions alike).
    zero = lambda idx: np.zeros((len(idx), 40))  # noqa: E731
    R = rng.standard_normal((40, 2))
    pre = TopEigenPreconditioner(zero, 40, 0.5, sketch=10, rank=5)
    assert pre.rank == 0 and pre.mu == 0.5 and pre.info["rank"] == 0
    np.testing.assert_array_equal(pre(R), R / 0.5)
    assert TopEigenPreconditioner(zero, 40, 0.0, sketch=10, rank=5).mu == 1.0
    # K = 0 with lam > 0 is solved (alpha = Y / lam) through the cg solver.
    Y = rng.standard_normal((40, 2))
    sol = solve_stored(np.zeros((40, 40)), Y, lam=0.5, solver="cg",
                       options=Options(dtype="float64"))
    assert sol.converged and sol.info["preconditioner"]["rank"] == 0
    np.testing.assert_allclose(sol.alpha, Y / 0.5, rtol=1e-12)


def test_jacobi_is_the_inverse_diagonal(rng):
    d = rng.uniform(1, 3, 50)
    R = rng.standard_normal((50, 4))
    np.testing.assert_allclose(JacobiPreconditioner(d)(R), R / d[:, None])
    np.testing.assert_allclose(JacobiPreconditioner(d)(R[:, 0]), R[:, 0] / d)


def test_panel_operator_is_a_float32_product_with_float64_results(rng):
    K = gaussian_K(rng, 1000).astype(np.float32)
    V = rng.standard_normal((1000, 10))
    op = PanelOperator(K, shift=0.5, panel_rows=384)          # ragged last panel
    out = op @ V
    assert out.dtype == np.float64
    ref = (K @ V.astype(np.float32)).astype(np.float64) + 0.5 * V
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-5)
    exact = K.astype(np.float64) @ V + 0.5 * V
    assert np.linalg.norm(out - exact) / np.linalg.norm(exact) < 1e-5
    rows = np.array([3, 10, 500, 999])
    sub = PanelOperator(K, rows=rows)
    np.testing.assert_allclose(sub @ V[rows], K[np.ix_(rows, rows)].astype(float) @ V[rows],
                               rtol=1e-5)
    np.testing.assert_array_equal(sub.row_block(np.array([1, 2])), K[np.ix_(rows[1:3], rows)])


def _labels_problem(rng, n=600, c=3):
    X = rng.random((n, 5))
    labels = np.argmax(X[:, :c], axis=1)            # learnable classes
    return rbf_kernel(X, gamma=2.0), np.eye(c)[labels], labels


def test_validation_run_fits_only_the_training_rows_and_scores_the_held_out_ones(rng):
    K, Y, labels = _labels_problem(rng)
    opts = Options(precond="none", val_fraction=0.1, patience=3, max_iter=60, tol=1e-12)
    iterates = {}
    _, info = pcg_solve(K, Y, options=opts, seed=4,
                        monitor=lambda it, a: iterates.setdefault(it, a.copy()) is None)
    held = np.zeros(len(K), dtype=bool)
    held[info["val_index"]] = True
    assert info["val_size"] == held.sum()
    assert abs(held.sum() - 60) <= 3                 # 10%, rounded per class
    # Class-stratified: each class loses ~10% of its members.
    for c in range(3):
        assert abs(held[labels == c].sum() - 0.1 * (labels == c).sum()) <= 1
    T, V = np.flatnonzero(~held), np.flatnonzero(held)
    best = info["best_iteration"]
    assert 1 <= best <= info["iterations"] == len(iterates)
    # The validation run's iterate at t*: plain CG on K[T, T] alone, the held-out rows 0.
    at_best = iterates[best]
    assert not at_best[held].any()
    ref, _ = block_cg(K[np.ix_(T, T)], Y[T], tol=1e-12, max_iter=best)
    np.testing.assert_allclose(at_best[T], ref, rtol=1e-8, atol=1e-10)
    # The recorded validation error is that of the held-out rows, computed here apart,
    # and t* is the first iteration at the lowest of them.
    val_err = np.mean(np.argmax(K[np.ix_(V, T)] @ ref, axis=1) != labels[V])
    assert info["val_error"] == pytest.approx(val_err)
    errs = [h["val_error"] for h in info["history"]]
    assert min(errs) == pytest.approx(val_err) and errs.index(min(errs)) + 1 == best
    assert "validation" in info["stopping"] and "patience=3" in info["stopping"]


def test_refit_uses_every_point_and_equals_cg_on_the_full_system(rng):
    X = rng.random((700, 5))
    labels = np.argmax(X[:, :3], axis=1)
    Xtr, ytr, Xte = X[:600], labels[:600], X[600:]
    K, Y = rbf_kernel(Xtr, gamma=2.0), np.eye(3)[ytr]
    opts = Options(precond="none", val_fraction=0.1, patience=3, max_iter=60, tol=1e-12)
    alpha, info = pcg_solve(K, Y, options=opts, seed=4)
    held = np.asarray(info["val_index"])
    t_star = info["best_iteration"]
    refit = info["refit"]
    # The held-out points are fitted too: no row of alpha is left at 0.
    assert np.abs(alpha[held]).sum(axis=1).min() > 0
    assert refit["iterations"] == info["returned_iteration"] == t_star
    assert not refit["converged"] and not info["converged"]
    # An independent computation: CG on all of K for t* iterations.
    ref, ref_info = block_cg(K, Y, tol=1e-12, max_iter=t_star)
    np.testing.assert_allclose(alpha, ref, rtol=1e-8, atol=1e-10)
    Kte = rbf_kernel(Xte, Xtr, gamma=2.0)
    np.testing.assert_array_equal(np.argmax(Kte @ alpha, axis=1), np.argmax(Kte @ ref, axis=1))
    assert refit["residual"] == pytest.approx(max(ref_info["residuals"]))
    assert refit["residual"] == pytest.approx(
        np.max(np.linalg.norm(K @ alpha - Y, axis=0) / np.linalg.norm(Y, axis=0)))
    assert len(refit["history"]) == t_star and "refit" in info["timings"]
    assert f"t*={t_star}" in info["stopping"] and "refit on all 600 points" in info["stopping"]


def test_refit_with_the_eigen_preconditioner_matches_its_own_pcg(rng):
    K, Y, _ = _labels_problem(rng, n=500)
    K = K.astype(np.float32)
    opts = Options(val_fraction=0.1, patience=3, max_iter=40, tol=1e-12)
    alpha, info = pcg_solve(K, Y, options=opts, budget_bytes=1e8, seed=2)
    # The refit's preconditioner is built for all n points, not the training subsystem.
    ref, _ = pcg_solve(K, Y, options=opts.replace(val_fraction=0.0,
                                                  max_iter=info["best_iteration"]),
                       budget_bytes=1e8, seed=2)
    np.testing.assert_allclose(alpha, ref, rtol=1e-6, atol=1e-8)
    assert info["refit"]["preconditioner"]["sketch"] == choose_sketch(500, 1e8)[0]
    assert info["preconditioner"]["sketch"] == choose_sketch(len(K) - info["val_size"], 1e8)[0]


def test_refit_stops_at_tol_before_t_star(rng):
    # The full system is easy (Y's columns are eigenvectors of K: CG converges in
    # one iteration), the training subsystem is not, so t* > 1 and the refit
    # stops at tol first.
    n, c = 300, 3
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    K = (Q * np.geomspace(1e-3, 1.0, n)) @ Q.T
    Y = Q[:, -c:] * np.sqrt(n)
    opts = Options(precond="none", val_fraction=0.2, patience=4, max_iter=50, tol=1e-8)
    alpha, info = pcg_solve(K, Y, options=opts, seed=1)
    assert info["best_iteration"] > 1
    assert info["refit"]["iterations"] == info["returned_iteration"] == 1
    assert info["converged"] and info["refit"]["converged"]
    assert info["refit"]["residual"] <= 1e-8 and "reached tol" in info["stopping"]
    np.testing.assert_allclose(alpha, sl.solve(K, Y, assume_a="pos"), rtol=1e-6, atol=1e-8)


def test_validation_stop_waits_for_min_iter_and_keeps_the_first_best():
    errors = [0.3, 0.1, 0.2, 0.2, 0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]
    stops = {}
    for min_iter in (0, 10):
        rule = ValidationStop(patience=3, min_iter=min_iter)
        stops[min_iter] = next(it for it, e in enumerate(errors, 1) if rule.update(it, e))
        assert rule.best_it == 2 and rule.best == 0.1      # the tie at 5 stays with 2
    assert stops == {0: 5, 10: 10}


def test_validation_run_is_not_stopped_before_val_min_iter(rng):
    K, Y, _ = _labels_problem(rng, n=400)
    for min_iter in (0, 12):
        _, info = pcg_solve(K, Y, options=Options(val_fraction=0.1, patience=1, tol=1e-12,
                                                  val_min_iter=min_iter, precond="none"))
        errs = [h["val_error"] for h in info["history"]]
        assert info["stopped_by_callback"] and info["iterations"] == len(errs)
        assert info["iterations"] == max(min_iter, info["best_iteration"] + 1)
        assert errs.index(min(errs)) + 1 == info["best_iteration"]


def test_early_stopped_solve_says_it_is_not_an_interpolant(rng):
    K, Y, _ = _labels_problem(rng)
    with pytest.warns(AccuracyWarning, match="stopped early on purpose.*refit on all 600 points"):
        sol = solve_stored(K, Y, solver="pcg",
                           options=Options(val_fraction=0.1, patience=2, tol=1e-12))
    assert not sol.converged and sol.relative_residual > 1e-3
    with pytest.raises(AccuracyError, match="validation rule"):
        solve_stored(K, Y, solver="pcg",
                     options=Options(val_fraction=0.1, patience=2, tol=1e-12, strict=True))


def test_non_convergence_is_loud(rng):
    K = gaussian_K(rng, 300)
    Y = rng.standard_normal((300, 2))
    with pytest.warns(AccuracyWarning, match="PCG did not converge.*max_iter"):
        sol = solve_stored(K, Y, solver="pcg",
                           options=Options(tol=1e-12, max_iter=2, precond="none"))
    assert not sol.converged and sol.iterations == 2
    assert [h["iteration"] for h in sol.info["history"]] == [1, 2]
    assert all(h["relative_residual"] > 1e-12 for h in sol.info["history"])


def test_estimator_with_pcg_matches_the_direct_solve(rng):
    X = rng.random((250, 4))
    y = np.sin(4 * X[:, 0])
    opts = Options(dtype="float64", tol=1e-12)
    pcg = KernelInterpolant(gamma=1.0, lam=1e-3, solver="pcg", options=opts).fit(X, y)
    exact = sl.solve(rbf_kernel(X, gamma=1.0) + 1e-3 * np.eye(250), y)
    np.testing.assert_allclose(pcg.dual_coef_, exact, rtol=1e-7, atol=1e-9)
    assert pcg.converged_ and pcg.solver_info_["preconditioner"]["preconditioner"] == "eigen"
    assert pcg.timings_["precond"] >= 0 and "gram" in pcg.timings_


@pytest.mark.parametrize("field, value", [
    ("precond", "ilu"), ("precond_rank", 0), ("precond_rank", 2.5), ("val_fraction", 1.0),
    ("val_fraction", -0.1), ("val_fraction", "0.1"), ("patience", 0), ("val_min_iter", -1),
    ("val_min_iter", 2.5), ("val_min_iter", True),
])
def test_bad_options_raise_typed_errors(field, value):
    with pytest.raises(InputError, match=f"Options.{field}"):
        Options(**{field: value})


def test_bad_calls_raise_typed_errors(rng):
    K = gaussian_K(rng, 40)
    with pytest.raises(InputError, match="rows but K is 40 x 40"):
        pcg_solve(K, np.ones((39, 2)))
    with pytest.raises(InputError, match="square"):
        PanelOperator(np.ones((3, 4)))
    with pytest.raises(InputError, match="val_fraction=0.001"):
        pcg_solve(K, np.eye(2)[np.arange(40) % 2], options=Options(val_fraction=0.001))
    with pytest.raises(InputError, match="positive diagonal"):
        JacobiPreconditioner(np.array([1.0, 0.0]))
    with pytest.raises(InputError, match="rank <= sketch.*precond_rank"):
        TopEigenPreconditioner(lambda idx: K[idx], 40, 0.0, sketch=10, rank=11)
    with pytest.raises(InputError, match="shift >= 0.*lam >= 0"):
        TopEigenPreconditioner(lambda idx: K[idx], 40, -1.0, sketch=10, rank=5)
    K_nan = K.copy()
    K_nan[:, 7] = K_nan[7, :] = np.nan
    with pytest.raises(NonFiniteError, match=r"K\[\d+, 7\].*Rescale X"):
        TopEigenPreconditioner(lambda idx: K_nan[idx], 40, 0.0, sketch=10, rank=5)
    with pytest.raises(InputError, match="'cholesky', 'cg' or 'pcg'"):
        solve_stored(K, np.ones(40), solver="pcgx")
    from kernelfit.errors import ParameterError
    with pytest.raises(ParameterError, match="solver"):
        KernelInterpolant(solver="pcgx").fit(rng.random((10, 2)), np.ones(10))


def test_sketch_follows_memory_and_a_given_rank():
    s, q = choose_sketch(60_000, budget_bytes=1e12)
    assert (s, q) == (2400, 1200)
    assert sketch_bytes(60_000, s, q) < 2e9
    small_s, small_q = choose_sketch(60_000, budget_bytes=2e8)
    assert sketch_bytes(60_000, small_s, small_q) <= 2e8 and small_s < s
    assert choose_sketch(100, budget_bytes=1e12) == (25, 12)
    assert choose_sketch(1000, budget_bytes=1.0, rank=300) == (600, 300)


def test_run_records_the_convergence_history(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from kernelfit.cli import main
    from kernelfit.pipeline.convergence import plot_convergence

    out = tmp_path / "r.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)
        assert main(["run", "--solver", "pcg", "--val-fraction", "0.1", "--patience", "3",
                     "--n-train", "600", "--n-test", "200", "--quiet", "--json",
                     str(out)]) == 0
    rec = json.loads(out.read_text())
    conv = rec["convergence"]
    table = capsys.readouterr().out
    assert (f"iterations   {rec['iterations']} (validation run, t* = {conv['best_iteration']}), "
            f"then {conv['refit']['iterations']} on all training points") in table
    assert rec["solver"] == "pcg" and not rec["converged"]
    assert "validation" in conv["stopping"] and abs(conv["val_size"] - 60) <= 10
    assert len(conv["history"]) == rec["iterations"] >= conv["returned_iteration"]
    assert all({"relative_residual", "val_error", "seconds"} <= set(h)
               for h in conv["history"])
    refit = conv["refit"]["history"]           # drawn beside the validation run
    assert len(refit) == conv["refit"]["iterations"] >= 1
    assert [h["iteration"] for h in refit] == list(range(1, len(refit) + 1))
    png = plot_convergence(conv, tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="no per-iteration history"):
        plot_convergence({}, tmp_path / "none.png")


def test_monitor_sees_every_iterate_and_can_stop_the_solve(rng):
    K, Y, _ = _labels_problem(rng, n=300)
    seen = []

    def monitor(it, alpha):
        seen.append((it, alpha.copy()))
        return it == 4

    alpha, info = pcg_solve(K, Y, options=Options(tol=1e-12, precond="none"), monitor=monitor)
    assert [it for it, _ in seen] == [1, 2, 3, 4] and info["iterations"] == 4
    assert info["stopped_by_callback"] and not info["converged"]
    ref, _ = block_cg(K, Y, tol=1e-12, max_iter=4)
    np.testing.assert_allclose(seen[-1][1], ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(alpha, ref, rtol=1e-10, atol=1e-12)
    # With a held-out split the monitor gets alpha over all n rows, 0 on the held-out ones.
    seen.clear()
    _, info = pcg_solve(K, Y, options=Options(tol=1e-12, val_fraction=0.1, patience=50),
                        monitor=monitor)
    held = np.asarray(info["val_index"])
    assert seen[-1][1].shape == Y.shape and not seen[-1][1][held].any()


def test_pcg_refuses_a_K_not_held_whole_in_host_memory():
    torch = pytest.importorskip("torch")
    with pytest.raises(InputError, match="host K held whole"):
        solve_stored(torch.eye(5, dtype=torch.float64), np.ones(5), solver="pcg")

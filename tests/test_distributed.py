"""kernelfit.distributed on a real LocalCluster of 2 worker processes (1 thread each).

Every Dask solver is checked against scipy.linalg.solve on a kernel matrix
built independently (scikit-learn's rbf_kernel), and the import guard checks
that a run without a scheduler never loads Dask.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
from distributed import Client, LocalCluster
from sklearn.metrics.pairwise import rbf_kernel

from kernelfit import KernelInterpolant, Options
from kernelfit.distributed import (
    build_gram_dask,
    connect,
    solve_distributed,
    tiling,
)
from kernelfit.engine.kernels import make_kernel
from kernelfit.errors import InputError, NotPositiveDefiniteError

# n = 301 with 128-wide target tiles: 3 tiles of 101, so K is padded by 2 rows
# (the identity block) and every solve crosses tile boundaries.
N, D, TILE = 301, 10, 128


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def system():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N, D))
    kernel = make_kernel("gaussian", sigma=2.0)
    K = rbf_kernel(X, gamma=kernel.gamma)          # independent of kernelfit's kernel maps
    return X, kernel, K, np.linalg.cond(K)


def test_tiling_pads_less_than_one_tile():
    for n in (1, 5, 13, 301, 2048, 2049, 20_000):
        for target in (1, 2, 3, 128, 2048):
            t, T = tiling(n, target)
            assert T * t >= n and (T - 1) * t < n and t <= max(target, 1) * 2


def test_gram_tiles_match_sklearn_and_pad_with_identity(client, system):
    X, kernel, K_ref, _ = system
    t, T = tiling(N, TILE)
    K, _, spread = build_gram_dask(client, X, kernel, dtype="float64", t=t, T=T)
    K = K.compute()
    assert K.shape == (T * t, T * t) and T * t > N
    np.testing.assert_allclose(K[:N, :N], K_ref, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(K, K.T)                     # exactly symmetric
    np.testing.assert_array_equal(K[N:, N:], np.eye(T * t - N))
    assert not K[N:, :N].any()
    assert len(spread["workers"]) == 2
    assert sum(w["tiles"] for w in spread["workers"].values()) == T * (T + 1) // 2
    assert 0 < spread["concurrency"] <= 2 + 1e-6


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("outputs", [1, 10])
@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_solvers_agree_with_scipy(client, system, solver, outputs, dtype):
    X, kernel, K_ref, cond = system
    rng = np.random.default_rng(outputs)
    Y = rng.standard_normal((N, outputs))
    lam = 1e-3 if outputs == 10 else 0.0                     # the shifted diagonal too
    ref = scipy.linalg.solve(K_ref + lam * np.eye(N), Y, assume_a="pos")
    tol = 1e-9
    opts = Options(dtype=dtype, tile_size=TILE, tol=tol, max_iter=500)
    sol = solve_distributed(kernel, X, Y, lam=lam, solver=solver, options=opts, client=client)
    # Perturbation bound: a relative error e in K (rounding to dtype) or a residual e
    # (CG's tolerance) moves alpha by at most cond(K) e; 20x covers the constants.
    err = max(np.finfo(dtype).eps, tol if solver == "cg" else 0.0)
    bound = 20 * cond * err
    assert np.linalg.norm(sol.alpha - ref) / np.linalg.norm(ref) <= bound
    assert sol.alpha.shape == (N, outputs) and sol.alpha.dtype == np.float64
    # Through the project's quality gate: judged against its dtype's residual limit.
    assert sol.converged and not sol.warnings
    assert sol.relative_residual <= sol.info["residual_limit"]
    np.testing.assert_allclose(sol.K_alpha, K_ref @ sol.alpha, rtol=0,
                               atol=50 * np.finfo(dtype).eps * np.abs(Y).max() * np.sqrt(N))
    assert sol.shift == lam
    assert sol.info["dask"]["workers"] == 2 and sol.info["dask"]["padding"] == 2
    if solver == "cg":
        assert sol.iterations > 0


def test_not_positive_definite_is_reported(client):
    # (<x, y> - 1) with small x: a negative diagonal, so no Cholesky exists.
    X = np.random.default_rng(0).standard_normal((40, 3)) * 0.1
    kernel = make_kernel("polynomial", gamma=1.0, degree=1, coef0=-1.0)
    with pytest.raises(NotPositiveDefiniteError, match="Dask's blocked Cholesky"):
        solve_distributed(kernel, X, np.ones(40), options=Options(tile_size=16), client=client)


def test_estimator_on_a_running_scheduler_matches_in_memory(client, system):
    X, _, _, _ = system
    y = np.sin(X[:, 0]) + X[:, 1]
    address = client.scheduler.address
    kw = dict(sigma=2.0, lam=0.0)
    dist = KernelInterpolant(**kw, options=Options(scheduler=address, tile_size=TILE)).fit(X, y)
    mem = KernelInterpolant(**kw).fit(X, y)
    assert np.linalg.norm(dist.dual_coef_ - mem.dual_coef_) <= 1e-8 * np.linalg.norm(mem.dual_coef_)
    assert dist.solver_info_["dask"]["scheduler"] == address
    X_new = np.random.default_rng(1).standard_normal((20, D))
    np.testing.assert_allclose(dist.predict(X_new), mem.predict(X_new), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("value", ["localhost:8786", "tcp://host", "tcp://host:0",
                                   "tcp://host:99999", "LOCAL", "", 8786, "http://h:1"])
def test_scheduler_option_is_validated(value):
    with pytest.raises(InputError, match="Options.scheduler"):
        Options(scheduler=value)


@pytest.mark.parametrize("value", [None, "local", "tcp://10.0.0.7:8786", "tcp://[::1]:8786",
                                   "tcp://node-3.cluster:8786"])
def test_scheduler_option_accepts(value):
    assert Options(scheduler=value).scheduler == value


def test_solvers_and_backends_a_dask_solve_does_not_run(system):
    X, _, K, _ = system
    y = X[:, 0]
    opts = Options(scheduler="local")
    for est, data in ((KernelInterpolant(solver="cg-matrix-free", options=opts), X),
                      (KernelInterpolant(options=opts.replace(backend="torch")), X),
                      (KernelInterpolant(kernel="precomputed", options=opts), K)):
        with pytest.raises(InputError, match="Dask|dask"):
            est.fit(data, y)


def test_unreachable_scheduler_says_what_to_do(monkeypatch):
    import kernelfit.distributed.cluster as cluster
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(InputError, match="no Dask scheduler answered.*--scheduler local"):
        with connect("tcp://127.0.0.1:1"):
            pass


def test_run_command_on_the_cluster(client, tmp_path):
    from kernelfit.cli import main

    out = tmp_path / "run.json"
    assert main(["run", "--quiet", "--n-train", "300", "--n-test", "100", "--scheduler",
                 client.scheduler.address, "--tile-size", "128", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["solver"] == "cholesky (dask, 2 workers)"
    assert record["relative_residual"] < 1e-8 and record["train_error"] == 0
    assert main(["run", "--quiet", "--scheduler", "localhost:8786"]) == 2


def test_without_scheduler_nothing_of_dask_is_imported():
    code = (
        "import sys\n"
        "from kernelfit.cli import main\n"
        "assert main(['run', '--quiet', '--n-train', '200', '--n-test', '50']) == 0\n"
        "assert main(['run', '--quiet', '--n-train', '200', '--n-test', '50',"
        " '--solver', 'cg']) == 0\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
        "print('LOADED', loaded)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LOADED []" in out.stdout, out.stdout[-2000:]


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_the_given_client_computes_whatever_the_default_scheduler(client, system, solver):
    # Dask's default scheduler is process-wide (the last client made, or a config); the
    # tiles live on `client`'s cluster, so every product and solve must go there.
    import dask

    X, kernel, K_ref, cond = system
    y = X[:, :1]
    with dask.config.set(scheduler="synchronous"):
        sol = solve_distributed(kernel, X, y, solver=solver, client=client,
                                options=Options(tile_size=TILE, tol=1e-8))
    ref = scipy.linalg.solve(K_ref, y, assume_a="pos")
    assert np.linalg.norm(sol.alpha - ref) <= 20 * cond * 1e-8 * np.linalg.norm(ref)


def test_refinement_on_the_cluster_matches_refinement_in_memory(client, system):
    # float32 tiles, float64 residuals where the tiles live: the same fixed point as the
    # in-memory refinement against the stored float32 K (both solve the rounded K).
    X, kernel, K_ref, cond = system
    Y = np.random.default_rng(3).standard_normal((N, 2))
    opts = Options(dtype="float32", tile_size=TILE, refine_steps=3, refine_against="stored")
    dist = solve_distributed(kernel, X, Y, options=opts, client=client)
    mem = KernelInterpolant(sigma=2.0, options=opts).fit(X, Y)
    hist = dist.info["refine_history"]
    assert len(hist) == 3 and hist[0] > 100 * hist[-1]
    assert dist.relative_residual < 1e-12 < hist[0]
    assert dist.info["residual_against"] == "the stored K tiles (float32) on the cluster"
    np.testing.assert_allclose(dist.alpha, mem.dual_coef_, rtol=0,
                               atol=1e-8 * np.abs(mem.dual_coef_).max())
    # and both are within cond(K) eps32 of the exact kernel's solution
    ref = scipy.linalg.solve(K_ref, Y, assume_a="pos")
    assert np.linalg.norm(dist.alpha - ref) <= 20 * cond * np.finfo(np.float32).eps * \
        np.linalg.norm(ref)
    with pytest.raises(InputError, match="no scheduler"):
        KernelInterpolant(sigma=2.0, options=opts.replace(refine_against="exact",
                                                          scheduler="local")).fit(X, Y)

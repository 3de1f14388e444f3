"""One engine on every backend: kernels, Gram, tiled Cholesky, solves and products.

The ``to_xp`` fixture (``conftest.backend_case``) runs the backend-neutral
code under NumPy, PyTorch on the CPU (when installed) and ``array-api-strict``
(a stray NumPy-only call fails there), each against SciPy / NumPy as the
oracle. GPU cases (``-m gpu``) run the same checks on CuPy and PyTorch-CUDA
when a device is present, and skip cleanly otherwise.
"""

import numpy as np
import pytest
import scipy.linalg as sl
from conftest import GPU_CASES, backend_params

from kernelfit.engine.backend import backend_of, get_backend
from kernelfit.engine.gram.panels import build_gram
from kernelfit.engine.kernels import make_kernel
from kernelfit.engine.solvers.cholesky import cholesky_solve, factor, restore_lower, tiled_cholesky
from kernelfit.engine.solvers.solve import solve_stored
from kernelfit.engine.storage.operators import KernelOperator, StoredOperator
from kernelfit.engine.storage.tiles import HostTileStore
from kernelfit.errors import InputError, NotPositiveDefiniteError


def host(a) -> np.ndarray:
    return backend_of(a).to_host(a) if not isinstance(a, np.ndarray) else a


def spd(rng, n):
    B = rng.standard_normal((n, n))
    return B @ B.T + n * np.eye(n)


@pytest.mark.parametrize("tile", [7, 32, 90])
def test_tiled_cholesky_equals_scipy(rng, to_xp, tile):
    K = spd(rng, 90)
    A = to_xp(K)
    f = tiled_cholesky(A, tile=tile, shift=0.5)
    H = host(A)
    np.testing.assert_allclose(np.tril(H), sl.cholesky(K + 0.5 * np.eye(90), lower=True),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(np.triu(H, 1), np.triu(K, 1))   # K kept above
    Y = rng.standard_normal((90, 3))
    np.testing.assert_allclose(f.solve(Y), sl.solve(K + 0.5 * np.eye(90), Y), rtol=1e-9)
    np.testing.assert_allclose(cholesky_solve(A, Y[:, 0], tile=16),
                               sl.solve(K + 0.5 * np.eye(90), Y[:, 0]), rtol=1e-9)


def test_restore_and_auto_jitter(rng, to_xp):
    X = rng.standard_normal((40, 2))
    K = make_kernel("gaussian", sigma=50.0).block(X, X)      # numerically singular
    A = to_xp(K)
    with pytest.raises(NotPositiveDefiniteError):
        tiled_cholesky(A, tile=16)
    restore_lower(A, np.diag(K))
    np.testing.assert_array_equal(host(A), K)
    f = factor(A, jitter="auto", tile=16)
    assert f.info["jitter"] > 0 and f.info["jitter_attempts"][0]["pivot"] is not None


@pytest.mark.parametrize("name", ["gaussian", "laplacian", "polynomial", "linear"])
def test_gram_and_kernel_maps_equal_numpy(rng, to_xp, name):
    X = rng.standard_normal((70, 5))
    kern = make_kernel(name, sigma=2.0) if name in ("gaussian", "laplacian") else make_kernel(
        name, gamma=0.2, degree=3)
    ref = build_gram(X, kern, options=_opts())
    Xd = to_xp(X)
    K = build_gram(Xd, kern, options=_opts(), backend=backend_of(Xd))
    np.testing.assert_allclose(host(K), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(host(K), host(K).T)


def test_stored_and_matrix_free_products_equal_dense(rng, to_xp):
    X = rng.standard_normal((60, 4))
    kern = make_kernel("gaussian", sigma=1.5)
    K = build_gram(X, kern, options=_opts())
    V = rng.standard_normal((60, 2))
    op = StoredOperator(to_xp(K), np.diag(K), shift=0.25)
    np.testing.assert_allclose(op @ V, (K + 0.25 * np.eye(60)) @ V, rtol=1e-12)
    be = backend_of(to_xp(X))
    free = KernelOperator(kern, X, shift=0.25, dtype="float64", backend=be)
    np.testing.assert_allclose(free @ V, (K + 0.25 * np.eye(60)) @ V, rtol=1e-10)


def _opts(**kw):
    from kernelfit import Options
    return Options(dtype="float64", block_size=16, n_jobs=1, **kw)


@pytest.mark.parametrize("backend_case", backend_params("numpy", "torch-cpu"), indirect=True)
@pytest.mark.parametrize("n,tile", [(50, 16), (64, 16), (33, 64)])
def test_host_tile_store_streams_the_same_factor(rng, backend_case, n, tile):
    """K's lower tiles in host memory, panels gathered into buffers: the same answer."""
    from kernelfit.engine.gram.panels import build_gram_tiles
    be = backend_case.backend()
    X = rng.standard_normal((n, 3))
    kern = make_kernel("gaussian", sigma=1.0)
    store = HostTileStore(n, tile, "float64", be)
    build_gram_tiles(X, kern, store, options=_opts())
    K = build_gram(X, kern, options=_opts())
    Y = rng.standard_normal((n, 10))
    op = KernelOperator(kern, X, dtype="float64", backend=be)
    sol = solve_stored(store, Y, lam=1e-3, operator=op, options=_opts())
    np.testing.assert_allclose(sol.alpha, sl.solve(K + 1e-3 * np.eye(n), Y), rtol=1e-8)
    assert sol.relative_residual < 1e-10 and sol.info["storage"] == "host tiles, streamed"


def test_host_tile_store_refuses_a_residual_without_the_data(rng):
    store = HostTileStore(10, 4, "float64", get_backend("numpy"))
    with pytest.raises(InputError, match="operator="):
        solve_stored(store, np.ones(10))


def test_auto_backend_is_numpy_without_a_gpu(monkeypatch):
    import kernelfit.engine.backend as bmod
    monkeypatch.setattr(bmod, "_NVIDIA_NODE", "/nonexistent/nvidiactl")
    bmod.get_backend.cache_clear()
    try:
        assert get_backend("auto").name == "numpy"
    finally:
        bmod.get_backend.cache_clear()
    with pytest.raises(InputError, match="unknown backend"):
        get_backend("jax")


class _FakeGPU:
    """What the planner reads of a backend: enough to plan a device without one."""

    on_gpu, device_name = True, "cuda:0"

    def __init__(self, name, free):
        self.name, self.free = name, int(free)

    def free_memory(self):
        return self.free

    def describe(self):
        return f"{self.name} on cuda:0 (planned only)"


def test_device_planner_in_memory_streamed_or_refused():
    from kernelfit import Options
    from kernelfit.engine.plan import plan_fit
    from kernelfit.errors import PlanError
    opts = Options(dtype="float32", memory_limit=10**12)
    fits = plan_fit(60_000, 784, 10, options=opts, backend=_FakeGPU("torch", 139e9))
    assert fits.storage == "device" and fits.device_bytes < 139e9
    # n = 100,000 float32 (40 GB) under a 20 GB device: lower tiles streamed from the host
    spill = plan_fit(100_000, 32, 10, options=opts.replace(device_memory=int(20e9)),
                     backend=_FakeGPU("torch", 139e9))
    assert spill.storage == "host tiles" and spill.tile % 256 == 0
    assert spill.device_bytes <= 20e9 and spill.device_limit_bytes == int(20e9)
    nt = -(-100_000 // spill.tile)
    assert spill.gram_bytes == nt * (nt + 1) // 2 * spill.tile**2 * 4   # lower tiles only
    with pytest.raises(PlanError, match="streaming K from host memory runs on --backend torch"):
        plan_fit(100_000, 32, 10, options=opts, backend=_FakeGPU("cupy", 20e9))
    with pytest.raises(PlanError, match="host memory .* cannot hold its tiles"):
        plan_fit(100_000, 32, 10, options=opts.replace(memory_limit=int(5e9)),
                 backend=_FakeGPU("torch", 20e9))
    with pytest.raises(PlanError, match="solver='cholesky'"):
        plan_fit(1000, 3, 1, solver="cg", options=opts, backend=_FakeGPU("torch", 1e12))


def test_estimator_on_host_tiles_end_to_end(rng, monkeypatch):
    """The estimator's streamed road (build_stored, solve, predict) on PyTorch's CPU."""
    pytest.importorskip("torch")
    from dataclasses import replace

    import kernelfit.model as model_mod
    from kernelfit import Options
    from kernelfit.model import KernelInterpolant
    real = model_mod.plan_fit
    monkeypatch.setattr(model_mod, "plan_fit", lambda *a, **k: replace(
        real(*a, **k), storage="host tiles", tile=24))
    X, Y = rng.standard_normal((100, 4)), rng.standard_normal((100, 2))
    opts = Options(backend="torch", device="cpu", dtype="float64")
    m = KernelInterpolant(sigma=1.5, options=opts).fit(X, Y)
    K = make_kernel("gaussian", sigma=1.5).block(X, X)
    np.testing.assert_allclose(m.dual_coef_, sl.solve(K, Y), rtol=1e-7)
    assert m.solver_info_["storage"] == "host tiles" and m.relative_residual_ < 1e-9
    Xt = rng.standard_normal((7, 4))
    np.testing.assert_allclose(m.predict(Xt), make_kernel("gaussian", sigma=1.5).block(Xt, X)
                               @ sl.solve(K, Y), rtol=1e-6)


def _gpu_or_skip(backend):
    try:
        return get_backend(backend, "cuda")
    except Exception as err:  # noqa: BLE001 - no library, no driver or no device
        pytest.skip(f"{backend} has no CUDA device here ({err})")


@pytest.mark.parametrize("backend_case", backend_params(*GPU_CASES), indirect=True)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_fit_equals_numpy(rng, backend_case, dtype):
    """The whole estimator on a GPU against the NumPy backend (same data, dtype, kernel)."""
    from kernelfit import Options
    from kernelfit.model import KernelInterpolantClassifier
    X = rng.standard_normal((3000, 20))
    y = (X[:, 0] + 0.3 * rng.standard_normal(3000) > 0).astype(int)
    gpu = KernelInterpolantClassifier(sigma=4.0, options=backend_case.options(
        dtype=dtype)).fit(X, y)
    cpu = KernelInterpolantClassifier(sigma=4.0, options=Options(dtype=dtype)).fit(X, y)
    assert gpu.solver_info_["storage"] == "device" and gpu.converged_
    tol = 2e-2 if dtype == "float32" else 1e-8
    np.testing.assert_allclose(gpu.dual_coef_, cpu.dual_coef_,
                               atol=tol * np.abs(cpu.dual_coef_).max())
    Xt = rng.standard_normal((500, 20))
    assert np.mean(gpu.predict(Xt) == cpu.predict(Xt)) > 0.99


@pytest.mark.gpu
def test_gpu_past_device_memory_under_a_forced_cap(rng):
    """A device capped below K's size: host tiles streamed through it, same answer."""
    from kernelfit import Options
    from kernelfit.model import KernelInterpolant
    _gpu_or_skip("torch")
    X, Y = rng.standard_normal((10_000, 16)), rng.standard_normal((10_000, 3))
    cap = int(300e6)           # K alone is 400 MB in float32
    opts = Options(backend="torch", device="cuda", dtype="float32", device_memory=cap)
    m = KernelInterpolant(sigma=3.0, lam=1e-2, options=opts).fit(X, Y)
    assert m.solver_info_["storage"] == "host tiles" and m.plan_.device_bytes <= cap
    ref = KernelInterpolant(sigma=3.0, lam=1e-2, options=Options(dtype="float64")).fit(X, Y)
    np.testing.assert_allclose(m.dual_coef_, ref.dual_coef_,
                               atol=1e-3 * np.abs(ref.dual_coef_).max())
    assert m.converged_


def test_planner_spills_to_disk_when_k_does_not_fit(tmp_path):
    from kernelfit import Options
    from kernelfit.engine.plan import plan_fit
    from kernelfit.errors import PlanError
    opts = Options(dtype="float32", memory_limit=int(3e9), scratch_dir=str(tmp_path))
    fits = plan_fit(20_000, 784, 10, options=opts)                 # K: 1.6 GB
    assert fits.storage == "host"
    spill = plan_fit(40_000, 784, 10, options=opts)                # K: 6.4 GB > 3 GB
    assert spill.storage == "disk tiles" and spill.total_bytes <= 3e9
    nt = -(-40_000 // spill.tile)
    assert spill.disk_bytes == nt * (nt + 1) // 2 * spill.tile**2 * 4
    with pytest.raises(PlanError, match="fewer training points"):
        plan_fit(40_000, 784, 10, options=opts.replace(storage="memory"))
    with pytest.raises(PlanError, match="three panels in RAM"):
        plan_fit(400_000, 784, 10, options=opts.replace(storage="disk"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_disk_store_equals_in_memory(rng, tmp_path, dtype):
    """Forced out of core (tiles on disk, three panels in RAM): the same alpha."""
    from kernelfit import Options
    from kernelfit.model import KernelInterpolant
    X, Y = rng.standard_normal((700, 6)), rng.standard_normal((700, 10))
    base = Options(dtype=dtype, tile_size=128, n_jobs=1)
    lam = 1e-3 if dtype == "float64" else 1e-1     # float32: a K well conditioned in it
    mem = KernelInterpolant(sigma=2.0, lam=lam, options=base.replace(storage="memory")).fit(X, Y)
    disk = KernelInterpolant(sigma=2.0, lam=lam, options=base.replace(
        storage="disk", scratch_dir=str(tmp_path))).fit(X, Y)
    assert disk.solver_info_["storage"] == "disk tiles" and disk.plan_.tile == 128
    rtol = 1e-10 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(disk.dual_coef_, mem.dual_coef_, rtol=rtol,
                               atol=rtol * np.abs(mem.dual_coef_).max())
    np.testing.assert_allclose(disk.predict(X[:50]), mem.predict(X[:50]), rtol=rtol, atol=rtol)


def test_disk_store_under_torch_panels_equals_numpy(rng, tmp_path):
    """K's tiles on disk, panels as torch tensors (read and written through host tiles)."""
    pytest.importorskip("torch")
    from kernelfit import Options
    from kernelfit.model import KernelInterpolant
    X, Y = rng.standard_normal((300, 5)), rng.standard_normal((300, 2))
    base = Options(dtype="float64", tile_size=64, n_jobs=1, storage="disk",
                   scratch_dir=str(tmp_path))
    ref = KernelInterpolant(sigma=2.0, lam=1e-3, options=base).fit(X, Y)
    got = KernelInterpolant(sigma=2.0, lam=1e-3, options=base.replace(
        backend="torch", device="cpu")).fit(X, Y)
    assert got.solver_info_["storage"] == "disk tiles" and got.plan_.backend == "torch"
    np.testing.assert_allclose(got.dual_coef_, ref.dual_coef_, rtol=1e-10,
                               atol=1e-10 * np.abs(ref.dual_coef_).max())


@pytest.mark.parametrize("kill", ["tiles:7", "panels:2"])
def test_a_killed_disk_run_resumes_to_the_same_bytes(tmp_path, kill):
    """`kernelfit run --storage disk`, killed mid-build or mid-factor, then run again."""
    import json
    import os
    import subprocess
    import sys

    def run(scratch, env_extra=None):
        out = tmp_path / f"{scratch}.json"
        cmd = [sys.executable, "-m", "kernelfit.cli", "run", "--n-train", "600", "--quiet",
               "--storage", "disk", "--scratch", str(tmp_path / scratch), "--tile-size",
               "128", "--dtype", "float64", "--n-jobs", "1", "--json", str(out),
               "--keep-scratch"]                   # the factors are compared below
        env = {**os.environ, **(env_extra or {})}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        return proc, out

    whole, out_whole = run("whole")
    assert whole.returncode == 0, whole.stderr
    killed, _ = run("killed", {"KERNELFIT_KILL_AFTER": kill})
    assert killed.returncode == -9                      # SIGKILL, mid-way
    resumed, out_resumed = run("killed")
    assert resumed.returncode == 0, resumed.stderr
    tiles = {s: next((tmp_path / s).glob("*.tiles.npy")).read_bytes() for s in ("whole", "killed")}
    assert tiles["whole"] == tiles["killed"]            # the factor, bit for bit
    a, b = (json.loads(p.read_text()) for p in (out_whole, out_resumed))
    assert a["norm"] == b["norm"] and a["test_error"] == b["test_error"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("outputs", [1, 10])
def test_disk_tile_store_agrees_with_scipy(rng, tmp_path, dtype, outputs):
    from kernelfit.engine.gram.panels import build_gram_tiles
    from kernelfit.engine.storage.disk_tiles import DiskTileStore
    X = rng.standard_normal((300, 5))
    kern = make_kernel("gaussian", sigma=1.0)
    store = DiskTileStore(tmp_path / "K.tiles.npy", 300, 64, dtype, get_backend("numpy"),
                          {"test": dtype})
    build_gram_tiles(X, kern, store, options=_opts())
    K = kern.block(X, X)
    Y = rng.standard_normal((300, outputs))[:, 0] if outputs == 1 else \
        rng.standard_normal((300, outputs))
    op = KernelOperator(kern, X, dtype=dtype)
    sol = solve_stored(store, Y, lam=1e-2, operator=op, options=_opts())
    ref = sl.solve(K + 1e-2 * np.eye(300), Y)
    rtol = 1e-9 if dtype == "float64" else 2e-3
    np.testing.assert_allclose(sol.alpha.reshape(ref.shape), ref, rtol=rtol,
                               atol=rtol * np.abs(ref).max())
    assert store.factored == store.n_tiles and sol.converged


def test_one_lapack_call_only_up_to_a_gib():
    """OpenBLAS's dpotrf segfaulted in one call on 16,000^2 float64: above 1 GiB, tiles."""
    from kernelfit.engine.sizes import LARGE_TILE, host_tile
    assert host_tile(10_000, itemsize=4) == 10_000          # 0.4 GB: one call
    assert host_tile(16_000, itemsize=8) == LARGE_TILE      # 2.0 GB: tiles
    assert host_tile(16_000, itemsize=4) == 16_000          # 1.0 GB (< 1 GiB): one call
    assert host_tile(60_000, itemsize=4) == LARGE_TILE
    assert host_tile(1000, 128) == 128

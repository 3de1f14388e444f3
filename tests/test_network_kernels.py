"""The NNGP and NTK of a fully connected ReLU network against two independent oracles.

1. Numerical integration: each layer's Gaussian expectations E[relu(u) relu(v)]
   and E[relu'(u) relu'(v)] integrated in 2-D, in polar coordinates (Gauss-Laguerre
   radially, Gauss-Legendre in angle between the ReLU's kinks, so the piecewise
   smooth integrand is integrated to rounding; plain Gauss-Hermite on a kinked
   integrand converges only algebraically and cannot reach 1e-10).
2. Monte Carlo: a wide random network's empirical NNGP (the readout's kernel
   given the last hidden layer) and empirical NTK (the sum over every parameter
   of df(x)/dp df(y)/dp, by backpropagation), drawn in NumPy.

And the engine's roads: every backend, float32 and float64, in memory, on disk,
streamed, the estimator, the command line, and the typed errors.
"""

import math

import numpy as np
import pytest

from kernelfit import KernelInterpolant, Options
from kernelfit.errors import InputError
from kernelfit.kernels import Kernel, make_kernel
from kernelfit.network_kernels import relu_network_kernels

SW, SB = 1.7, 0.4           # away from the defaults, so a dropped parameter shows


# -- oracle 1: the Gaussian expectations integrated numerically ----------------------------
_LAG = np.polynomial.laguerre.laggauss(8)          # exact for the radial polynomials below
_LEG = np.polynomial.legendre.leggauss(40)


def _expect(kxx, kyy, kxy):
    """(E[relu(u) relu(v)], E[relu'(u) relu'(v)]) for (u, v) ~ N(0, [[kxx, kxy], [kxy, kyy]]).

    u = sqrt(kxx) z1, v = sqrt(kyy) (rho z1 + s z2), z = r (cos phi, sin phi):
    the integrand is r^2 relu(A) relu(B) (resp. 1[A > 0] 1[B > 0]) with A, B
    functions of phi alone, against the density r exp(-r^2 / 2) / (2 pi).
    """
    rho = float(np.clip(kxy / math.sqrt(kxx * kyy), -1, 1))
    s = math.sqrt(max(1 - rho * rho, 0.0))
    # radial parts, t = r^2 / 2: int r^3 e^(-r^2/2) dr = int 2t e^-t dt, int r e^(-r^2/2) dr
    # = int e^-t dt
    t, w = _LAG
    rad1, rad0 = float(np.sum(w * 2 * t)), float(np.sum(w))
    # kinks of relu(A) and relu(B) in phi: A = 0 at +-pi/2; B = 0 where rho cos + s sin = 0
    b0 = math.atan2(-rho, s)
    cuts = sorted({0.0, 2 * math.pi, *((c % (2 * math.pi)) for c in
                                       (math.pi / 2, 3 * math.pi / 2, b0, b0 + math.pi))})
    e1 = e0 = 0.0
    x, wl = _LEG
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=False):
        if hi - lo < 1e-15:
            continue
        phi = lo + (hi - lo) * (x + 1) / 2
        A = math.sqrt(kxx) * np.cos(phi)
        B = math.sqrt(kyy) * (rho * np.cos(phi) + s * np.sin(phi))
        scale = (hi - lo) / 2 / (2 * math.pi)
        e1 += scale * float(np.sum(wl * np.maximum(A, 0) * np.maximum(B, 0))) * rad1
        e0 += scale * float(np.sum(wl * ((A > 0) & (B > 0)))) * rad0
    return e1, e0


def _quadrature_kernels(x, y, depth, sw, sb):
    """NNGP and NTK of one pair, layer by layer with :func:`_expect`."""
    d = len(x)
    kxy = sw**2 * float(x @ y) / d + sb**2
    kxx = sw**2 * float(x @ x) / d + sb**2
    kyy = sw**2 * float(y @ y) / d + sb**2
    th = kxy
    for _ in range(depth):
        e1, e0 = _expect(kxx, kyy, kxy)
        kxy_new = sw**2 * e1 + sb**2
        th = kxy_new + sw**2 * th * e0
        kxx = sw**2 * _expect(kxx, kxx, kxx)[0] + sb**2
        kyy = sw**2 * _expect(kyy, kyy, kyy)[0] + sb**2
        kxy = kxy_new
    return kxy, th


def _pairs(rng, d=7):
    X = rng.standard_normal((6, d))
    X[1] = X[0]                        # x = y
    X[2] = -X[0] * 0.5                 # antipodal
    X[3] = X[0] + 1e-3 * rng.standard_normal(d)   # near-equal
    return X


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("sw,sb", [(2**0.5, 0.0), (SW, SB)])
def test_values_match_numerical_integration(rng, depth, sw, sb):
    X = _pairs(rng)
    G = X @ X.T
    sq = np.einsum("ij,ij->i", X, X)
    nngp, ntk = relu_network_kernels(G, sq[:, None], sq[None, :], d=X.shape[1], depth=depth,
                                     weight_std=sw, bias_std=sb)
    for i in range(len(X)):
        for j in range(len(X)):
            q_nngp, q_ntk = _quadrature_kernels(X[i], X[j], depth, sw, sb)
            # x = y exactly: arccos's infinite slope at 1 turns the inner product's
            # rounding (~1e-16) into ~1e-8 in t, hence in E[relu' relu']; the engine
            # writes the exact diagonal (Kernel.diag) and refuses duplicates
            same = np.array_equal(X[i], X[j])
            assert nngp[i, j] == pytest.approx(q_nngp, rel=1e-10, abs=1e-12)
            assert ntk[i, j] == pytest.approx(q_ntk, rel=1e-7 if same else 1e-10, abs=1e-12)
            if same:
                k = make_kernel("ntk", X=X, depth=depth, weight_std=sw, bias_std=sb)
                assert k.diag(X[i:i + 1])[0] == pytest.approx(q_ntk, rel=1e-12)


# -- oracle 2: wide random networks -----------------------------------------------------
def _empirical(X, depth, width, sw, sb, rng):
    """Empirical NNGP and NTK of one random network of ``depth`` hidden layers of ``width``."""
    P, d = X.shape
    acts, pres = [X], []
    a, fan_in = X, d
    Ws = []
    for _ in range(depth):
        W = rng.standard_normal((fan_in, width), dtype=np.float32).astype(np.float64)
        b = rng.standard_normal(width)
        h = sw * a @ W / math.sqrt(fan_in) + sb * b
        Ws.append(W)
        pres.append(h)
        a, fan_in = np.maximum(h, 0), width
        acts.append(a)
    w_out = rng.standard_normal(width if depth else d)
    nngp = sw**2 * acts[-1] @ acts[-1].T / fan_in + sb**2
    # backpropagate delta_l = df / dh_l from the readout down
    ntk = sw**2 * acts[-1] @ acts[-1].T / fan_in + sb**2          # readout's own W and b
    delta = np.broadcast_to(sw * w_out / math.sqrt(fan_in), (P, fan_in))
    for layer in reversed(range(depth)):
        delta = delta * (pres[layer] > 0)
        n_in = acts[layer].shape[1]
        dd = delta @ delta.T
        ntk = ntk + dd * (sw**2 * acts[layer] @ acts[layer].T / n_in + sb**2)
        if layer:
            delta = sw * delta @ Ws[layer].T / math.sqrt(n_in)
    return nngp, ntk


@pytest.mark.parametrize("depth", [1, 2])
def test_wide_random_networks_approach_both_kernels(depth):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((5, 10))
    G, sq = X @ X.T, np.einsum("ij,ij->i", X, X)
    nngp, ntk = relu_network_kernels(G, sq[:, None], sq[None, :], d=10, depth=depth,
                                     weight_std=SW, bias_std=SB)
    draws = [_empirical(X, depth, 4096, SW, SB, rng) for _ in range(3)]
    e_nngp = np.mean([a for a, _ in draws], axis=0)
    e_ntk = np.mean([b for _, b in draws], axis=0)
    # width 4096, three draws: the sampling error is ~1-4% (relu(h)^2 is heavy-tailed)
    assert np.linalg.norm(e_nngp - nngp) < 0.05 * np.linalg.norm(nngp)
    assert np.linalg.norm(e_ntk - ntk) < 0.05 * np.linalg.norm(ntk)


# -- structure ----------------------------------------------------------------------------
def test_depth_zero_is_the_scaled_linear_kernel_plus_bias(rng):
    X = rng.standard_normal((8, 5))
    for name in ("nngp", "ntk"):
        k = make_kernel(name, X=X, depth=0, weight_std=SW, bias_std=SB)
        np.testing.assert_allclose(k.block(X, X), SW**2 * X @ X.T / 5 + SB**2, rtol=1e-14)
        np.testing.assert_allclose(k.diag(X), SW**2 * np.sum(X * X, 1) / 5 + SB**2, rtol=1e-14)


@pytest.mark.parametrize("name", ["nngp", "ntk"])
@pytest.mark.parametrize("depth", [1, 3])
def test_symmetric_psd_and_its_diagonal_is_the_exact_one(rng, name, depth):
    X = rng.standard_normal((60, 12))
    X[5] = 0.0                                        # a zero vector
    X[6] = -X[7]                                      # antipodal pair
    for sb in (0.0, SB):
        k = make_kernel(name, X=X, depth=depth, weight_std=SW, bias_std=sb)
        K = k.block(X, X)
        assert np.all(np.isfinite(K))
        np.testing.assert_allclose(K, K.T, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(np.diag(K), k.diag(X), rtol=1e-7)
        assert np.linalg.eigvalsh(K).min() > -1e-10 * np.abs(K).max()
        if sb == 0:          # a zero input has zero covariance with everything
            np.testing.assert_array_equal(K[5], 0.0)


def test_antipodal_points_are_uncorrelated_after_one_layer():
    x = np.array([[1.0, 2.0, -1.0], [-2.0, -4.0, 2.0]])
    for name in ("nngp", "ntk"):
        k = make_kernel(name, X=x, depth=1, weight_std=SW, bias_std=0.0)
        # c = -1 (clamped from -1 - eps): E[relu(u) relu(v)] = E[relu' relu'] = 0
        # (a second layer would correlate them again: relu's outputs are positive)
        K = k.block(x, x)
        assert np.all(np.isfinite(K)) and abs(K[0, 1]) < 1e-7 * K[0, 0]


@pytest.mark.parametrize("name", ["nngp", "ntk"])
def test_float32_is_close_to_float64(rng, name):
    X = rng.random((40, 30))
    k = make_kernel(name, X=X, depth=3, weight_std=SW, bias_std=SB)
    K64 = k.block(X, X)
    K32 = k.block(X.astype(np.float32), X.astype(np.float32))
    assert K32.dtype == np.float32
    # near-equal points: arccos's slope turns float32 rounding into ~sqrt(eps) in t
    np.testing.assert_allclose(K32, K64, rtol=0, atol=2e-3 * np.abs(K64).max())
    off = ~np.eye(40, dtype=bool)
    np.testing.assert_allclose(K32[off], K64[off], rtol=0, atol=2e-5 * np.abs(K64).max())


@pytest.mark.parametrize("name", ["nngp", "ntk"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_backend_equals_numpy(rng, backend_case, name, dtype):
    X = rng.random((30, 9))
    k = make_kernel(name, X=X, depth=2, weight_std=SW, bias_std=SB)
    ref = k.block(X.astype(dtype), X.astype(dtype))
    be = backend_case.backend()
    got = be.to_host(k.block(backend_case.to_xp(X.astype(dtype)),
                             backend_case.to_xp(X.astype(dtype))))
    assert got.dtype == np.dtype(dtype)
    tol = 1e-12 if dtype == "float64" else 1e-5
    off = ~np.eye(len(X), dtype=bool)
    np.testing.assert_allclose(got[off], ref[off], rtol=tol, atol=tol * np.abs(ref).max())
    # x = x: arccos at 1 - eps, whose slope turns each library's rounding of <x, x>
    # into ~1e-8 (the Gram builders overwrite it with Kernel.diag)
    # (about sqrt(eps): 1e-8 in float64, 3e-4 in float32)
    np.testing.assert_allclose(np.diag(got), np.diag(ref),
                               rtol=1e-7 if dtype == "float64" else 1e-3)


# -- the engine's roads -------------------------------------------------------------------
def _xy(digits, n=150):
    X, y, Y = digits
    return X[:n], Y[:n], X[n:n + 150], y[n:n + 150]


@pytest.mark.parametrize("name", ["nngp", "ntk"])
def test_estimator_interpolates_on_every_backend_and_storage(digits, backend_case, tmp_path,
                                                             name):
    X, Y, Xt, _ = _xy(digits)
    ref = KernelInterpolant(kernel=name, depth=2, weight_std=SW, bias_std=SB,
                            options=Options(dtype="float64")).fit(X, Y)
    K = make_kernel(name, X=X, depth=2, weight_std=SW, bias_std=SB).block(X, X)
    # the oracle: a direct solve of K (built from the kernel's own block map)
    alpha = np.linalg.solve(K, Y)
    np.testing.assert_allclose(ref.dual_coef_, alpha, rtol=1e-6, atol=1e-8 * np.abs(alpha).max())
    for storage in ("memory", "disk"):
        opts = backend_case.options(dtype="float64", storage=storage, tile_size=64,
                                    scratch_dir=str(tmp_path / storage))
        clf = KernelInterpolant(kernel=name, depth=2, weight_std=SW, bias_std=SB,
                                options=opts).fit(X, Y)
        assert clf.relative_residual_ < 1e-10
        np.testing.assert_allclose(clf.predict(Xt), ref.predict(Xt), rtol=1e-7, atol=1e-9)


def test_streamed_gram_equals_the_direct_one(rng):
    from kernelfit.gram_stream import build_gram_streamed
    Phi, Phi_te = rng.random((40, 24)), rng.random((9, 24))
    mu, sd = Phi.mean(0), Phi.std(0)
    A, B = (Phi - mu) / sd, (Phi_te - mu) / sd
    for name in ("nngp", "ntk"):
        k = make_kernel(name, dim=24, depth=2, weight_std=SW, bias_std=SB)
        chunks = ((Phi[:, j:j + 8], Phi_te[:, j:j + 8]) for j in range(0, 24, 8))
        K, Kt = build_gram_streamed(chunks, 40, 9, k, dtype="float64",
                                    options=Options(block_size=16, n_jobs=1))
        off = ~np.eye(40, dtype=bool)
        np.testing.assert_allclose(K[off], k.block(A, A)[off], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(Kt, k.block(B, A), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.diag(K), k.diag(A), rtol=1e-14)


def test_float32_fit_matches_float64(digits):
    X, Y, Xt, yt = _xy(digits)
    f64 = KernelInterpolant(kernel="ntk", depth=1, options=Options(dtype="float64")).fit(X, Y)
    f32 = KernelInterpolant(kernel="ntk", depth=1, options=Options(dtype="float32")).fit(X, Y)
    p64, p32 = f64.predict(Xt), f32.predict(Xt)
    assert np.mean(p64.argmax(1) != p32.argmax(1)) <= 0.01
    np.testing.assert_allclose(p32, p64, atol=1e-2)


def test_cli_runs_the_ntk(tmp_path, capsys):
    import json

    from kernelfit.cli import main
    out = tmp_path / "run.json"
    assert main(["run", "--kernel", "ntk", "--depth", "1", "--n-train", "300", "--quiet",
                 "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["kernel"]["name"] == "ntk" and rec["kernel"]["depth"] == 1
    assert rec["kernel"]["weight_std"] == pytest.approx(2**0.5) and "gamma" not in rec["kernel"]
    assert rec["train_error"] == 0 and rec["test_error"] < 0.1
    assert "ntk" in capsys.readouterr().out


def test_sweep_axis_and_plan_take_the_depth(tmp_path, capsys):
    from kernelfit.cli import main
    from kernelfit.experiments.sweeps import parse_axis
    assert parse_axis("depth=0,1,3").values == (0, 1, 3)
    assert parse_axis("bias_std=0,0.5").values == (0, 0.5)
    assert main(["plan", "--kernel", "nngp", "--depth", "3"]) == 0
    assert "nngp, depth 3" in capsys.readouterr().out


# -- typed errors ---------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(depth=-1), dict(depth=1.5), dict(depth=True),
                                dict(weight_std=0.0), dict(weight_std=float("inf")),
                                dict(bias_std=-0.1), dict(bias_std=float("nan"))])
def test_invalid_parameters_are_typed_errors(kw):
    X = np.ones((3, 2))
    with pytest.raises(InputError):
        make_kernel("ntk", X=X, **kw)
    with pytest.raises(InputError):
        relu_network_kernels(X @ X.T, 2.0, 2.0, d=2, **{"depth": 1, **kw})
    with pytest.raises(InputError):          # the estimator's own (scikit-learn's) check
        KernelInterpolant(kernel="nngp", **kw).fit(X, np.arange(3.0))


def test_a_bandwidth_or_a_missing_dimension_is_refused():
    from kernelfit.errors import ParameterError
    X = np.eye(3)
    with pytest.raises(ParameterError, match="no bandwidth"):
        make_kernel("ntk", X=X, sigma=2.0)
    with pytest.raises(ParameterError, match="no bandwidth"):
        KernelInterpolant(kernel="nngp", gamma=0.5).fit(X, np.arange(3.0))
    with pytest.raises(InputError, match="input dimension"):
        make_kernel("nngp", depth=1)
    with pytest.raises(InputError, match="dim"):
        Kernel(name="ntk")
    with pytest.raises(InputError):
        relu_network_kernels(X, 1.0, 1.0, d=0, depth=1)

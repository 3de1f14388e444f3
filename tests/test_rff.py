"""Random Fourier features (features/rff.py): Phi Phi^T tends to the Gaussian kernel of
kernelfit's own convention, the features are seeded and chunk-independent, and a run
streams them unstandardized (the same fit as in memory)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kernelfit.cli import main
from kernelfit.engine.kernels import make_kernel
from kernelfit.errors import InputError
from kernelfit.features import make_features
from kernelfit.features.rff import RFF_BLOCK
from kernelfit.pipeline.run import RunConfig, run


@pytest.fixture
def rows():
    return np.random.default_rng(3).random((40, 6, 6), dtype=np.float32)


def _gaussian(X, sigma):
    """exp(-|x - y|^2 / (2 sigma^2)) written out in float64: the oracle."""
    X = X.reshape(len(X), -1).astype(np.float64)
    d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2.0 * sigma**2))


def test_inner_products_tend_to_the_gaussian_kernel_of_the_same_sigma(rows):
    K = _gaussian(rows, 1.5)
    errors = {}
    for N in (250, 4000, 64000):
        P = make_features("rff", n_features=N, sigma=1.5, seed=2).fit(rows).transform(rows)
        P = P.astype(np.float64)
        errors[N] = np.abs(P @ P.T - K).mean()
        # Monte Carlo: each entry is a mean of N terms bounded by 2, std <= 1 / sqrt(N)
        assert errors[N] < 2.0 / np.sqrt(N)
    # 16x the features: 4x less error expected; at least 2x less asked
    assert errors[4000] < errors[250] / 2 and errors[64000] < errors[4000] / 2
    # the diagonal: cos^2 averages 1/2, so |phi(x)|^2 -> 1 = k(x, x)
    assert abs(np.mean(np.sum(P * P, axis=1)) - 1.0) < 0.05


def test_default_scale_is_the_gaussian_kernels_default(rows):
    f = make_features("rff", n_features=10).fit(rows)
    assert float(f.gamma_) == make_kernel("gaussian", X=rows.reshape(len(rows), -1)).gamma
    g = make_features("rff", n_features=10, gamma=0.125).fit(rows)
    h = make_features("rff", n_features=10, sigma=2.0).fit(rows)
    assert float(g.gamma_) == float(h.gamma_) == 0.125      # gamma = 1 / (2 sigma^2)
    np.testing.assert_array_equal(g.transform(rows), h.transform(rows))


def test_seeded_chunked_and_nested(rows):
    N = 2 * RFF_BLOCK + 77
    a = make_features("rff", n_features=N, seed=5).fit(rows).transform(rows)
    b = make_features("rff", n_features=N, seed=5).fit(rows).transform(rows)
    c = make_features("rff", n_features=N, seed=6).fit(rows).transform(rows)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    f = make_features("rff", n_features=N, seed=5).fit(rows)
    assert f.streamable and not f.stream_standardize
    for chunk in (100, RFF_BLOCK, 700):
        cols = np.hstack([f.transform_columns(rows, c, chunk)
                          for c in range(f.n_column_chunks(chunk))])
        np.testing.assert_allclose(cols, a, atol=1e-6)   # BLAS rounds by block width
    # the features of a smaller N are a prefix, up to the factor sqrt(2 / N)
    small = make_features("rff", n_features=300, seed=5).fit(rows).transform(rows)
    np.testing.assert_allclose(small * np.sqrt(300), a[:, :300] * np.sqrt(N), rtol=1e-5)


def test_state_round_trip(rows):
    f = make_features("rff", n_features=64, seed=1).fit(rows)
    g = make_features("rff", n_features=64, seed=1).set_state(f.input_shape_, f.state_arrays())
    np.testing.assert_array_equal(f.transform(rows), g.transform(rows))
    with pytest.raises(InputError, match="call fit"):
        make_features("rff", n_features=4).transform(rows)


@pytest.mark.parametrize("params, match", [
    ({"n_features": 0}, "n_features must be an integer >= 1"),
    ({"n_features": 2.5}, "n_features must be an integer"),
    ({"sigma": -1.0}, "sigma must be a positive finite number"),
    ({"gamma": float("nan")}, "gamma must be a positive finite number"),
    ({"sigma": 1.0, "gamma": 1.0}, "not both"),
    ({"seed": -1}, "seed must be an integer >= 0"),
])
def test_parameters_are_checked(params, match):
    with pytest.raises(InputError, match=match):
        make_features("rff", **params)


def test_streamed_run_is_the_in_memory_run():
    """K = Phi Phi^T streamed (unstandardized) is the K the in-memory road builds."""
    base = RunConfig(dataset="digits", n_train=300, n_test=100, kernel="linear",
                     features="rff", feature_params={"n_features": 900}, feature_cache=False)
    rec = {s: run(RunConfig(**{**base.__dict__, "stream": s})) for s in (False, True)}
    assert rec[True].solver.endswith("(streamed K)")
    assert rec[True].train_error == rec[False].train_error == 0.0
    assert rec[True].test_error == rec[False].test_error
    assert rec[True].norm == pytest.approx(rec[False].norm, rel=1e-3)


def test_cli_n_features(tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["run", "--features", "rff", "--n-features", "700", "--kernel", "linear",
                 "--n-train", "200", "--n-test", "50", "--quiet", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["feature_dim"] == 700 and rec["feature_params"]["n_features"] == 700
    assert rec["train_error"] == 0.0

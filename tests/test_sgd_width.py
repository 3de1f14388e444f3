"""`kernelfit sgd width`: trained ReLU networks against their NTK linearization.

Oracles: the linearized prediction against NumPy's solve / lstsq (t -> infinity),
a plain loop of gradient steps on the linear model (finite t), SciPy's matrix
exponential (the gradient-flow form); the network's gradients against finite
differences, its tangent kernel against J J^T built from those gradients and,
at large width, against the closed-form NTK; the step-size bound against the
linear dynamics it is meant to keep stable. The small study (embedded digits)
runs in seconds and must show the distance shrinking with width.
"""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import scipy.linalg

from kernelfit.cli import main
from kernelfit.engine.network_kernels import relu_network_kernels
from kernelfit.errors import InputError
from kernelfit.studies.sgd.width import (
    LinearizedNTK,
    ReluNet,
    prepare_shared,
    run_width_study,
    small_study,
    step_size,
)
from kernelfit.studies.sgd.width_report import loglog_slope, summarize


def _ntk(A, B):
    sa, sb = np.sum(A ** 2, 1), np.sum(B ** 2, 1)
    return relu_network_kernels(A @ B.T, sa[:, None], sb[None, :], d=A.shape[1], depth=1)[1]


@pytest.fixture
def problem():
    """A small well-conditioned NTK regression: Theta on 25 points, 7 test points, 3 outputs."""
    rng = np.random.default_rng(0)
    X, Xt = rng.random((25, 12)), rng.random((7, 12))
    Y = np.eye(3)[rng.integers(0, 3, 25)]
    f0, f0t = rng.normal(size=(25, 3)), rng.normal(size=(7, 3))
    theta, theta_t = _ntk(X, X), _ntk(Xt, X)
    eta = step_size(np.linalg.eigvalsh(theta)[-1])
    return LinearizedNTK(theta, theta_t, eta), theta, theta_t, Y, f0, f0t, eta


def test_linearized_prediction_starts_at_f0(problem):
    lin, _, _, Y, f0, f0t, _ = problem
    for flow in (False, True):
        train, test = lin.outputs(f0, f0t, Y, 0, flow=flow)
        np.testing.assert_allclose(train, f0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(test, f0t, rtol=0, atol=1e-12)


def test_linearized_prediction_ends_at_the_interpolant(problem):
    lin, theta, theta_t, Y, f0, f0t, eta = problem
    coef = np.linalg.solve(theta, Y - f0)
    want_test = f0t + theta_t @ coef
    train, test = lin.outputs(f0, f0t, Y, np.inf)
    np.testing.assert_allclose(train, Y, atol=1e-9)
    np.testing.assert_allclose(test, want_test, rtol=1e-8, atol=1e-9)
    # a large finite time: every mode has decayed by exp(-60) or more
    t = int(60 / (eta * lin.lam[0])) + 1
    for flow in (False, True):
        train, test = lin.outputs(f0, f0t, Y, t, flow=flow)
        lstsq = np.linalg.lstsq(theta, Y - f0, rcond=None)[0]
        np.testing.assert_allclose(train, Y, atol=1e-8)
        np.testing.assert_allclose(test, f0t + theta_t @ lstsq, rtol=1e-7, atol=1e-8)


def test_linearized_prediction_is_gradient_descent_on_the_linear_model(problem):
    lin, theta, theta_t, Y, f0, f0t, eta = problem
    f, ft = f0.copy(), f0t.copy()
    for t in range(1, 41):          # the linear model's own gradient steps, one by one
        r = f - Y
        f, ft = f - eta * theta @ r, ft - eta * theta_t @ r
        if t in (1, 7, 40):
            train, test = lin.outputs(f0, f0t, Y, t)
            np.testing.assert_allclose(train, f, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(test, ft, rtol=1e-10, atol=1e-12)
    # the gradient-flow form is Lee et al.'s matrix exponential
    t = 9
    E = scipy.linalg.expm(-eta * t * theta)
    want = f0t + theta_t @ np.linalg.solve(theta, (np.eye(len(theta)) - E) @ (Y - f0))
    np.testing.assert_allclose(lin.outputs(f0, f0t, Y, t, flow=True)[1], want, rtol=1e-8,
                               atol=1e-10)


def test_a_full_batch_sgd_step_is_a_gradient_step(problem):
    lin, _, _, Y, f0, f0t, _ = problem
    train, test = f0.copy(), f0t.copy()
    lin.sgd_step(train, test, Y, np.arange(len(Y)))
    want_train, want_test = lin.outputs(f0, f0t, Y, 1)
    np.testing.assert_allclose(train, want_train, atol=1e-12)
    np.testing.assert_allclose(test, want_test, atol=1e-12)


# -- the step size ------------------------------------------------------------------------

def test_step_size_bound_is_where_the_linear_dynamics_stop_contracting(problem):
    _, theta, _, Y, f0, _, _ = problem
    lam_max = np.linalg.eigvalsh(theta)[-1]
    assert step_size(lam_max) == pytest.approx(1 / lam_max)
    assert step_size(lam_max, lr_factor=1.9) == pytest.approx(1.9 / lam_max)

    def residual_after(eta, steps=200):
        r = f0 - Y
        for _ in range(steps):
            r = r - eta * theta @ r
        return np.linalg.norm(r)

    start = np.linalg.norm(f0 - Y)
    assert residual_after(1.9 / lam_max) < start          # inside the bound: contracts
    assert residual_after(2.1 / lam_max) > 1e3 * start    # beyond it: blows up
    with pytest.raises(InputError, match="stability limit"):
        step_size(lam_max, lr=2.1 / lam_max)
    with pytest.raises(InputError, match="stability limit"):
        step_size(lam_max, lr=2.0 / lam_max)
    for bad in (0, 2, 2.5, -1, float("nan")):
        with pytest.raises(InputError, match="lr_factor"):
            step_size(lam_max, lr_factor=bad)
    with pytest.raises(InputError, match="lr"):
        step_size(lam_max, lr=0.0)


def test_a_study_refuses_an_unstable_step_before_training():
    with pytest.raises(InputError, match="lr_factor"):
        small_study(lr_factor=2.0).validate()
    rng = np.random.default_rng(1)
    X, Xt = rng.random((20, 10)), rng.random((5, 10))
    y, yt = np.arange(20) % 2, np.arange(5) % 2
    lam_max = np.linalg.eigvalsh(_ntk(X, X))[-1]
    assert 1.0 >= 2 / lam_max          # so lr = 1 is beyond the bound here
    with pytest.raises(InputError, match="stability limit"):
        prepare_shared(small_study(lr=1.0, n_train=20, batch_size=10, ntk_points=10), X, y,
                       Xt, yt)


@pytest.mark.parametrize("bad, match", [
    (dict(widths=()), "widths"), (dict(widths=(64, 64)), "twice"), (dict(widths=(0,)), "widths"),
    (dict(seeds=(-1,)), "seeds"), (dict(optimizers=("adam",)), "optimizer"),
    (dict(optimizers=()), "optimizers"), (dict(times=(0, 99)), "times"),
    (dict(batch_size=500), "batch_size"), (dict(ntk_points=1), "ntk_points"),
    (dict(dtype="float16"), "dtype"), (dict(epochs=0), "epochs"), (dict(n_train=1), "n_train"),
    (dict(weight_std=0.0), "weight_std"), (dict(lr=-1.0), "lr"),
])
def test_settings_are_validated(bad, match):
    with pytest.raises(InputError, match=match):
        small_study(**bad).validate()


# -- the network --------------------------------------------------------------------------

def test_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    X, R = rng.random((6, 5)), rng.normal(size=(6, 3))
    net = ReluNet(5, 7, 3, rng, dtype="float64")

    def loss():
        return float(np.sum(R * net(X)))

    g1, g2 = net.gradients(X, R)
    h = 1e-6
    for W, g in ((net.W1, g1), (net.W2, g2)):
        num = np.zeros_like(W)
        for idx in np.ndindex(W.shape):
            old = W[idx]
            W[idx] = old + h
            up = loss()
            W[idx] = old - h
            down = loss()
            W[idx] = old
            num[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


def test_tangent_kernel_is_j_jt_and_tends_to_the_closed_form_ntk():
    rng = np.random.default_rng(3)
    X = rng.random((5, 9))
    net = ReluNet(9, 40, 2, rng, dtype="float64")
    # J J^T from the gradients themselves, per output, averaged over the outputs
    want = np.zeros((5, 5))
    for k in range(2):
        rows = []
        for i in range(5):
            R = np.zeros((5, 2))
            R[i, k] = 1.0
            rows.append(np.concatenate([g.ravel() for g in net.gradients(X, R)]))
        J = np.array(rows)
        want += J @ J.T / 2
    np.testing.assert_allclose(net.empirical_ntk(X), want, rtol=1e-12, atol=1e-12)
    # a wide network's tangent kernel is the NTK of the same conventions (within ~ w^-1/2)
    wide = ReluNet(9, 16384, 2, np.random.default_rng(4), dtype="float64")
    theta = _ntk(X, X)
    rel = np.linalg.norm(wide.empirical_ntk(X) - theta) / np.linalg.norm(theta)
    assert rel < 0.05


def test_initial_outputs_have_the_nngp_variance():
    """f_0(x) of the stax network is N(0, NNGP(x, x)): checked over many small networks."""
    rng = np.random.default_rng(5)
    x = rng.random((1, 16))
    sq = np.sum(x ** 2)
    nngp = relu_network_kernels(np.array([[sq]]), sq, sq, d=16, depth=1)[0][0, 0]
    outs = np.array([ReluNet(16, 256, 1, np.random.default_rng([6, s]), dtype="float64")(x)[0, 0]
                     for s in range(2000)])
    assert np.var(outs) == pytest.approx(nngp, rel=0.1)


# -- the study ----------------------------------------------------------------------------

def test_small_study_distance_shrinks_with_width(tmp_path):
    study = small_study(widths=(64, 4096), seeds=(0, 1), epochs=4)
    records = run_width_study(study, tmp_path, log=lambda *_: None, progress=False)
    assert len(records) == 4 and not any(r["reused"] for r in records)
    s = summarize(records)
    for opt in ("gd", "sgd"):
        per = s["optimizers"][opt]["per_time"]["4"]["widths"]
        small, wide = per["64"]["dist"]["mean"], per["4096"]["dist"]["mean"]
        # theory: a factor sqrt(64) = 8; asked: at least 3
        assert 0 < wide < small / 3, (opt, small, wide)
        r0 = records[0]["optimizer"][opt]["history"][0]
        assert r0["t"] == 0 and r0["dist"] == pytest.approx(0, abs=1e-12)
    # a rerun reuses every record
    again = run_width_study(study, tmp_path, log=lambda *_: None, progress=False)
    assert all(r["reused"] for r in again)


def test_loglog_slope_recovers_a_power():
    w = np.array([64, 256, 1024, 4096])
    assert loglog_slope(w, 3 * w ** -0.5) == pytest.approx(-0.5)


def test_cli_small_writes_summary_and_figure(tmp_path, capsys):
    out = tmp_path / "w"
    argv = ["sgd", "width", "--small", "--widths", "64,256", "--seeds", "0", "--epochs", "2",
            "--optimizers", "gd", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    summary = json.loads((out / "width-summary.json").read_text())
    # The command the records name is the one given to main(), whatever sys.argv holds.
    assert summary["command"] == shlex.join(["kernelfit", *argv]) and summary["machine"]
    assert summary["study"]["widths"] == [64, 256] and summary["facts"]["eta_lambda_max"] == \
        pytest.approx(1.0)
    assert (out / "width.png").stat().st_size > 0
    assert "gradient descent" in (out / "width-summary.md").read_text()


@pytest.mark.parametrize("argv, match", [
    (["--lr-factor", "2"], "lr_factor"), (["--optimizers", "gd,adam"], "optimizer"),
    (["--widths", "64,64"], "twice"), (["--times", "0,50"], "times"),
])
def test_cli_refuses_bad_settings(argv, match, tmp_path, capsys):
    assert main(["sgd", "width", "--small", "--out", str(tmp_path / "w"), *argv]) == 2
    assert match in capsys.readouterr().err

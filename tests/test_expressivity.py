"""Theorem 1's network: it fits every label, has 2n + d weights, and the command records it."""

import json

import numpy as np
import pytest

from kernelfit import studies
from kernelfit.cli import main
from kernelfit.errors import DuplicatePointsError, InputError, PlanError
from kernelfit.studies import expressivity as ex
from kernelfit.studies.expressivity import ExpressivityConfig, fit_relu_net


def _forward_by_hand(net, z):
    """The network written out unit by unit (no matrices): the oracle for ReluNet.__call__."""
    p = sum(float(ai) * float(zi) for ai, zi in zip(net.a, z, strict=True))
    return sum(float(w) * max(p - float(b), 0.0) for w, b in zip(net.w, net.b, strict=True))


@pytest.mark.parametrize("n,d", [(2, 1), (40, 3), (300, 50)])
def test_network_outputs_equal_the_labels(rng, n, d):
    Z = rng.standard_normal((n, d))
    y = rng.integers(0, 10, n).astype(float)
    net, info = fit_relu_net(Z, y, seed=1)
    assert net.n_weights == 2 * n + d == net.a.size + net.b.size + net.w.size
    assert np.max(np.abs(net(Z) - y)) <= 1e-8
    for i in rng.choice(n, size=min(n, 5), replace=False):
        assert _forward_by_hand(net, Z[i]) == pytest.approx(y[i], abs=1e-8)
    # the interleaving the theorem needs, and the reported smallest eigenvalue of A
    x = np.sort(Z @ net.a)
    assert np.all(net.b < x) and np.all(x[:-1] < net.b[1:])
    assert info["min_diagonal"] == pytest.approx(np.min(x - net.b), rel=1e-9)


def test_any_labels_real_valued_too(rng):
    Z = rng.random((100, 64))
    y = 1e3 * rng.standard_normal(100)
    net, _ = fit_relu_net(Z, y)
    assert np.max(np.abs(net(Z) - y)) <= 1e-8 * np.max(np.abs(y))


def test_coinciding_points_and_ties_raise():
    Z = np.array([[0.0, 1.0], [2.0, 3.0], [0.0, 1.0]])
    with pytest.raises(DuplicatePointsError):
        fit_relu_net(Z, np.array([0.0, 1.0, 2.0]))
    # distinct, but 1e-20 apart: every projection ties them in float64
    Z = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1e-20]])
    with pytest.raises(InputError, match="tied"):
        fit_relu_net(Z, np.array([0.0, 1.0, 2.0]))


def test_random_labels_of_digits_fit_exactly():
    rec = ex.run_expressivity(ExpressivityConfig(dataset="digits", n=300))
    assert rec["exact_fit"] and rec["max_residual"] <= 1e-8
    assert rec["n_weights"] == 2 * 300 + 64 and rec["labels"] == "random-labels"


@pytest.mark.parametrize("kw,err", [(dict(n=1), InputError), (dict(dataset="imagenet"), InputError),
                                    (dict(labels="true"), InputError), (dict(d=0), InputError),
                                    (dict(tol=0.0), InputError), (dict(seed=-1), InputError),
                                    (dict(n=10**6), PlanError)])
def test_bad_settings_raise_typed_errors(kw, err):
    with pytest.raises(err):
        ExpressivityConfig(**kw).settings()


def test_image_dimension_mismatch():
    with pytest.raises(InputError, match="d = 64"):
        ex.run_expressivity(ExpressivityConfig(dataset="digits", n=20, d=10))


def test_cli_writes_record_and_png_and_reuses(tmp_path, monkeypatch, capsys):
    args = ["expressivity", "--dataset", "digits", "--n", "120", "--out", str(tmp_path),
            "--plot", "--quiet"]
    assert main(args) == 0
    (path,) = tmp_path.glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["n_weights"] == 2 * 120 + 64 and rec["max_residual"] <= 1e-8
    assert len(list(tmp_path.glob("*.png"))) == 1
    assert "exact (<= 1e-08): yes" in capsys.readouterr().out

    def refuse(*a, **k):
        raise AssertionError("rerun with the same settings must reuse the record")

    monkeypatch.setattr(studies.expressivity, "run_expressivity", refuse)
    assert main(args) == 0


@pytest.mark.parametrize("args", [("--n", "1"), ("--dataset", "nope"),
                                  ("--labels", "true"), ("--dataset", "digits", "--d", "5")])
def test_cli_bad_parameters_exit_2(tmp_path, capsys, args):
    assert main(["expressivity", "--out", str(tmp_path), "--quiet", *args]) == 2
    assert "kernelfit: error:" in capsys.readouterr().err

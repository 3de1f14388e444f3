"""The follow-up studies (kernelfit/studies/followups): each --small run shows its paper's
qualitative result, the double-descent fits are the minimum-norm solutions an SVD gives,
and the studies resume from their records."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from kernelfit.cli import main
from kernelfit.errors import InputError
from kernelfit.features import make_features
from kernelfit.options import Options
from kernelfit.pipeline.run import RunConfig, prepare, run
from kernelfit.studies.followups.double_descent import (
    DoubleDescentStudy,
    fit_primal,
    min_norm_lstsq,
)
from kernelfit.studies.followups.double_descent import run_study as run_dd
from kernelfit.studies.followups.learning_curves import LearningCurveStudy
from kernelfit.studies.followups.learning_curves import run_study as run_lc
from kernelfit.studies.followups.noise import NoiseStudy
from kernelfit.studies.followups.noise import run_study as run_noise


def _quiet(*_):
    pass


def test_interpolation_noise_small(tmp_path):
    res = run_noise(NoiseStudy.small(), tmp_path, log=_quiet)
    assert not res.failed
    interp = [r for r in res.rows if r.get("method") == "interpolating"]
    assert interp and all(r["train_error"] == 0.0 for r in interp)      # it interpolates
    for k in ("gaussian", "laplacian"):
        err = {r["noise"]: r["test_error"] for r in interp if r["kernel"] == k}
        # error rises with noise: the noisiest level well above the clean one
        assert err[max(err)] > err[0.0] + 0.05, err
    # BMM18's point: with noise the norm grows faster with n than without
    norms = [r for r in res.rows if r["part"].startswith("norm-") and r["kernel"] == "gaussian"]
    slope = {}
    for p in {r["noise"] for r in norms}:
        rs = sorted((r for r in norms if r["noise"] == p), key=lambda r: r["n_train"])
        slope[p] = np.polyfit(np.log([r["n_train"] for r in rs]),
                              np.log([r["norm"] for r in rs]), 1)[0]
    assert slope[max(slope)] > slope[0.0]
    md = res.files["markdown"].read_text()
    assert "arXiv 1802.01396" in md and "not verifiable" in md
    assert res.files["error_vs_noise_digits"].stat().st_size > 0
    rows = list(csv.DictReader(res.files["csv"].open()))
    assert len(rows) == len(res.rows)
    # BMM18: random labels take SGD more epochs to fit than true labels (on digits both
    # kernels fit both labelings within the small study's 100 epochs; measured 1 vs 7
    # Gaussian, 9 vs 15 Laplacian)
    fits = res.measures["sgd_epochs_to_fit"]
    for k in ("gaussian", "laplacian"):
        true, rand = fits[("digits", k, "true")], fits[("digits", k, "random")]
        assert true is not None and rand is not None and true < rand, fits
    it = [r for r in rows if r["part"].startswith("iterations-")]
    assert len(it) == 4 and all(r["sgd_fit"] == r["sgd_epochs_to_fit"] for r in it)
    assert all(int(r["sgd_epochs_to_near_fit"]) <= int(r["sgd_epochs_to_fit"]) for r in it)
    assert "SGD epochs to fit" in md and res.files["sgd_train_error_digits"].stat().st_size
    # resumable: a second run fits nothing
    lines = []
    again = run_noise(NoiseStudy.small(), tmp_path, plot=False, log=lines.append)
    assert again.rows == res.rows
    assert not any("  norm " in line for line in lines)    # no point was fitted again
    assert sum("reusing" in line for line in lines) >= len(res.rows)


def test_double_descent_small(tmp_path):
    study = DoubleDescentStudy.small()
    res = run_dd(study, tmp_path, log=_quiet)
    assert not res.failed
    n = study.n_train
    peak = res.measures["peak_sq_loss"]
    assert n / 2 <= peak <= 2 * n, peak
    rows = [r for r in res.rows if r["n_features"] is not None]
    past = [r for r in rows if r["n_features"] >= n]
    assert past and all(r["train_error"] == 0.0 for r in past)          # interpolates
    at = {N: np.mean([r["test_sq_loss"] for r in rows if r["n_features"] == N])
          for N in {r["n_features"] for r in rows}}
    # the second descent: far past the threshold the loss falls well below the peak,
    # towards the exact Gaussian interpolant's
    assert at[max(at)] < at[peak] / 3
    assert res.measures["exact"]["test_sq_loss"] < at[peak]
    assert "N = n = 10,000" in res.files["markdown"].read_text()


@pytest.fixture(scope="module")
def digits_small():
    cfg = RunConfig(dataset="digits", n_train=120, n_test=60, kernel="linear", features="rff",
                    stream=True, feature_cache=False,
                    options=Options(progress=False, dtype="float64"))
    return cfg, prepare(cfg)


def _oracle(cfg, data, N):
    """w = pinv(Phi) Y by NumPy's SVD pseudo-inverse: the minimum-norm least-squares weights."""
    f = make_features("rff", seed=cfg.seed, n_features=N).fit(data.train_images)
    Phi = f.transform(data.train_images).astype(np.float64)
    classes, codes = np.unique(data.train_labels, return_inverse=True)
    Y = np.eye(len(classes))[codes]
    W = np.linalg.pinv(Phi) @ Y
    F = f.transform(data.test_images).astype(np.float64) @ W
    return W, F, classes


@pytest.mark.parametrize("N", [40, 500])
def test_each_side_of_the_threshold_is_the_minimum_norm_solution(digits_small, N):
    cfg, data = digits_small
    cfg = RunConfig(**{**cfg.__dict__, "feature_params": {"n_features": N}})
    W, F, classes = _oracle(cfg, data, N)
    # N < n: kernelfit's least squares; N > n: the engine's interpolant of K = Phi Phi^T
    r = fit_primal(cfg) if N < cfg.n_train else run(cfg).to_dict()
    assert r["norm"] == pytest.approx(np.linalg.norm(W), rel=1e-6)
    assert r["test_error"] == pytest.approx(np.mean(classes[F.argmax(1)] != data.test_labels))
    Y = (data.test_labels[:, None] == classes[None, :]).astype(float)
    assert r["test_sq_loss"] == pytest.approx(np.mean(np.sum((F - Y) ** 2, 1)), rel=1e-6)
    assert r["converged"]


def _with_singular_values(rng, n, N, s):
    U, _ = np.linalg.qr(rng.standard_normal((n, N)))
    V, _ = np.linalg.qr(rng.standard_normal((N, N)))
    return (U * s) @ V.T


@pytest.mark.parametrize("smallest", [1e-1, 1e-7])
def test_min_norm_lstsq_of_a_full_rank_phi_takes_qr_and_matches_the_svd(smallest):
    rng = np.random.default_rng(0)
    Phi = _with_singular_values(rng, 300, 120, np.geomspace(1.0, smallest, 120))
    Y = rng.standard_normal((300, 4))
    W, rank, method = min_norm_lstsq(Phi, Y)
    oracle = np.linalg.lstsq(Phi, Y, rcond=None)[0]
    assert method.startswith("Householder QR") and rank == 120
    # both backward stable: they agree to about cond(Phi) * eps
    assert np.linalg.norm(W - oracle) <= 1e3 * np.finfo(float).eps / smallest \
        * np.linalg.norm(oracle)


def test_min_norm_lstsq_of_a_rank_deficient_phi_is_the_minimum_norm_solution():
    rng = np.random.default_rng(1)
    Phi = rng.standard_normal((200, 30)) @ rng.standard_normal((30, 80))   # rank 30 of 80
    Y = rng.standard_normal((200, 3))
    W, rank, method = min_norm_lstsq(Phi, Y)
    oracle = np.linalg.pinv(Phi) @ Y
    assert method.startswith("SVD") and rank == 30
    np.testing.assert_allclose(W, oracle, rtol=0, atol=1e-9 * np.abs(oracle).max())
    with pytest.raises(InputError, match="K = Phi Phi"):
        min_norm_lstsq(Phi.T, Y[:80])


def test_learning_curves_small(tmp_path):
    res = run_lc(LearningCurveStudy.small(), tmp_path, log=_quiet)
    assert not res.failed
    fits = res.measures["fits"]
    assert {(f["dataset"], f["kernel"]) for f in fits} == {("digits", "gaussian"),
                                                             ("digits", "laplacian")}
    for f in fits:
        # error falls with n: a finite, positive exponent for both losses
        assert math.isfinite(f["beta"]) and f["beta"] > 0
        assert math.isfinite(f["beta_sq"]) and f["beta_sq"] > 0
        assert math.isfinite(f["beta_std"])
    assert "arXiv 1905.10843" in res.files["markdown"].read_text()


@pytest.mark.parametrize("cls, kw, match", [
    (NoiseStudy, {"noise": (0.5, 0.1)}, "increasing"),
    (NoiseStudy, {"kernels": ("linear",)}, "compares"),
    (DoubleDescentStudy, {"seeds": (1, 1)}, "distinct"),
    (DoubleDescentStudy, {"n_features": (300, 200)}, "increasing"),
    (LearningCurveStudy, {"sizes": (100,)}, "two sizes"),
    (LearningCurveStudy, {"n_test": 0}, "n_test"),
])
def test_settings_are_checked(cls, kw, match):
    with pytest.raises(InputError, match=match):
        cls.small(**kw)


def test_cli(tmp_path, capsys):
    out = tmp_path / "dd"
    assert main(["study", "double-descent", "--small", "--sizes", "30,300,1200", "--seeds", "0",
                 "--no-plot", "--quiet", "--out", str(out)]) == 0
    assert "Double descent" in capsys.readouterr().out
    assert (out / "double-descent.csv").exists()
    assert main(["study", "learning-curves", "--small", "--n-train", "100"]) == 2
    assert "--sizes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["study", "no-such-study"])

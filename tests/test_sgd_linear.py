"""SGD on the linear model: against lstsq / scipy.linalg.solve, the step bound, the command."""

import itertools
import json

import numpy as np
import pytest
import scipy.linalg

from kernelfit.cli import main
from kernelfit.errors import AccuracyWarning, InputError
from kernelfit.studies.sgd import linear, linear_record
from kernelfit.studies.sgd.linear import SGDLinearConfig, fit_linear_sgd
from kernelfit.studies.sgd.linear_spectrum import batch_curvature_bound


def _onehot(y):
    Y = np.zeros((len(y), y.max() + 1))
    Y[np.arange(len(y)), y] = 1.0
    return Y


def _problem(rng, n=8, d=20, m=5, classes=3):
    X = rng.standard_normal((n, d))
    y = np.arange(n) % classes          # every class present
    return X, y, rng.standard_normal((m, d)), rng.integers(0, classes, m)


def _fit(X, y, Xt, yt, **kw):
    return fit_linear_sgd(SGDLinearConfig(**{"n_train": None, **kw}), X, y, Xt, yt)


def test_primal_from_zero_is_lstsq_min_norm(rng):
    X, y, Xt, yt = _problem(rng)
    res = _fit(X, y, Xt, yt, form="primal", kernel="linear", batch_size=1, epochs=2000,
               tol=1e-10)
    w_star = np.linalg.lstsq(X, _onehot(y), rcond=None)[0]     # the oracle
    assert np.linalg.norm(res.theta - w_star) <= 1e-9 * np.linalg.norm(w_star)
    assert res.history[-1]["train_error"] == 0.0


def test_primal_from_random_w0_keeps_its_null_space_part(rng):
    X, y, Xt, yt = _problem(rng)
    res = _fit(X, y, Xt, yt, form="primal", kernel="linear", batch_size=2, epochs=3000,
               tol=1e-10, init="random", init_scale=3.0)
    w0 = 3.0 * np.random.default_rng([0, 3]).standard_normal(res.theta.shape) / np.sqrt(20)
    w_star = np.linalg.pinv(X) @ _onehot(y)
    predicted = w_star + (np.eye(20) - np.linalg.pinv(X) @ X) @ w0
    assert np.linalg.norm(res.theta - predicted) <= 1e-8 * np.linalg.norm(predicted)
    assert np.allclose(X @ res.theta, _onehot(y), atol=1e-8)      # still an interpolant
    assert np.linalg.norm(res.theta) > 1.1 * np.linalg.norm(w_star)


def test_kernel_form_converges_to_scipy_solve(rng):
    X = 3.0 * rng.standard_normal((12, 4))       # far apart at sigma 1: K near the identity
    y = np.arange(12) % 3
    K = np.exp(-scipy.linalg.norm(X[:, None] - X[None], axis=2) ** 2 / 2.0)
    alpha = scipy.linalg.solve(K, _onehot(y), assume_a="pos")
    for k in (0, 3):
        res = _fit(X, y, X[:4], y[:4], kernel="gaussian", sigma=1.0, batch_size=4, epochs=500,
                   tol=1e-11, precondition_rank=k)
        assert np.linalg.norm(res.theta - alpha) <= 1e-10 * np.linalg.norm(alpha)


def test_step_bound_covers_every_batch_and_gives_monotone_decrease(rng):
    X, y, Xt, yt = _problem(rng, n=9, d=4)       # d < n: a Gaussian K with a real spread
    K = np.exp(-0.5 * scipy.linalg.norm(X[:, None] - X[None], axis=2) ** 2 / 1.5**2)
    lam1 = np.linalg.eigvalsh(K)[-1]
    for b in (1, 3, 9):
        bound = batch_curvature_bound(K, b, lam1)["bound"]
        worst = max(np.linalg.eigvalsh(K[np.ix_(B, B)])[-1]
                    for B in map(list, itertools.combinations(range(9), b)))
        assert worst <= bound * (1 + 1e-12)
    res = _fit(X, y, Xt, yt, kernel="gaussian", sigma=1.5, batch_size=3, epochs=40, tol=0.0)
    dist = np.array([h["rkhs_dist"] for h in res.history])
    assert np.all(np.diff(dist) <= 1e-12 * dist[0]) and dist[-1] < 0.9 * dist[0]


def test_a_step_beyond_the_bound_is_flagged_and_divergence_raises(rng):
    X, y, Xt, yt = _problem(rng, n=9, d=4)
    kw = dict(n_train=None, kernel="gaussian", sigma=1.5, batch_size=9, epochs=5, tol=0.0)
    cfg = SGDLinearConfig(**kw, lr=10.0)
    res = fit_linear_sgd(cfg, X, y, Xt, yt)
    with pytest.warns(AccuracyWarning, match="exceeds the provable"):
        record = linear_record._record(cfg, res.history, res.facts)
    assert not record["lr_provable"] and not record["monotone"]
    with pytest.raises(InputError, match="diverged"):
        fit_linear_sgd(SGDLinearConfig(**{**kw, "epochs": 200}, lr=1e6), X, y, Xt, yt)


def test_preconditioning_flattens_the_spectrum_and_speeds_up(rng):
    X = rng.standard_normal((60, 8))
    y = np.arange(60) % 4
    kw = dict(kernel="gaussian", sigma=2.0, batch_size=10, epochs=20, tol=0.0, split_rank=6)
    plain = _fit(X, y, X[:10], y[:10], **kw)
    pre = _fit(X, y, X[:10], y[:10], **kw, precondition_rank=6)
    assert pre.facts["lr"] > 3 * plain.facts["lr"]
    assert pre.history[-1]["rkhs_dist"] < 0.8 * plain.history[-1]["rkhs_dist"]
    assert pre.history[-1]["loss"] < 0.5 * plain.history[-1]["loss"]
    for r in (plain, pre):   # the provably non-increasing distance of each method
        c = np.array([h["contraction_dist"] for h in r.history])
        assert np.all(np.diff(c) <= 1e-12 * c[0])


@pytest.mark.parametrize("kw", [dict(form="primal", kernel="gaussian"), dict(batch_size=0),
                                dict(precondition_rank=99, n_train=100),
                                dict(lr=-1.0), dict(lr=float("nan")), dict(init="ones"),
                                dict(kernel="linear", sigma=2.0), dict(tol=1.0),
                                dict(epochs=2.5), dict(split_rank=-1), dict(n_train=1)])
def test_bad_settings_raise_input_error(kw):
    with pytest.raises(InputError):
        SGDLinearConfig(**kw).settings()


def test_primal_needs_more_dimensions_than_points():
    with pytest.raises(InputError, match="d > n"):
        linear.run_sgd_linear(SGDLinearConfig(form="primal", kernel="linear", n_train=100,
                                              n_test=10, epochs=1), progress=False)


def _cli(tmp_path, *args):
    return main(["sgd", "linear", "--dataset", "digits", "--n-test", "30", "--out",
                 str(tmp_path), "--quiet", *args])


def test_cli_writes_record_and_png_and_reuses_them(tmp_path, monkeypatch, capsys):
    args = ("--n-train", "40", "--form", "primal", "--kernel", "linear", "--batch-size", "4",
            "--epochs", "3", "--init", "random", "--plot")
    assert _cli(tmp_path, *args) == 0
    out = capsys.readouterr()
    assert "kernelfit: warning: relative distance" in out.err       # not converged: said so
    assert "P_null(w0)" in out.out
    (record,) = tmp_path.glob("*.json")
    saved = json.loads(record.read_text())
    assert saved["epochs_run"] == 3 and len(saved["history"]) == 4
    assert saved["norm_limit"] > saved["norm_min"] and saved["reference"].startswith("numpy")
    assert len(list(tmp_path.glob("*.png"))) == 1

    def refuse(*a, **k):
        raise AssertionError("rerun with the same settings must reuse the record")

    monkeypatch.setattr(linear, "run_sgd_linear", refuse)
    assert _cli(tmp_path, *args) == 0
    monkeypatch.undo()


def test_cli_compare_preconditioned_plots_both(tmp_path):
    assert _cli(tmp_path, "--n-train", "80", "--batch-size", "8", "--epochs", "2",
                "--precondition-rank", "10", "--compare-preconditioned", "--plot") == 0
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert sorted(r["config"]["precondition_rank"] for r in records) == [0, 10]
    assert all("rkhs_top" in r["history"][0] for r in records)
    assert len(list(tmp_path.glob("compare-*.png"))) == 1


@pytest.mark.parametrize("args", [("--lr", "fast"), ("--device", "cuda"),
                                  ("--compare-preconditioned",), ("--batch-size", "0"),
                                  ("--form", "primal", "--kernel", "linear",
                                   "--n-train", "100")])
def test_cli_bad_parameters_exit_2(tmp_path, capsys, args):
    assert _cli(tmp_path, "--n-train", "40", "--batch-size", "4", "--epochs", "1", *args) == 2
    assert "kernelfit: error:" in capsys.readouterr().err


def test_cli_compare_init_plots_zero_and_random_start(tmp_path):
    assert _cli(tmp_path, "--n-train", "30", "--form", "primal", "--kernel", "linear",
                "--batch-size", "3", "--epochs", "2", "--compare-init", "--plot") == 0
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert sorted(r["config"]["init"] for r in records) == ["random", "zero"]
    assert len(list(tmp_path.glob("compare-*.png"))) == 1


def test_settled_is_the_epoch_from_which_a_condition_holds_to_the_end():
    h = [{"epoch": e, "v": v} for e, v in enumerate([5, 0, 3, 0, 0])]
    assert linear_record.settled(h, lambda m: m["v"] == 0) == 3
    assert linear_record.settled(h, lambda m: m["v"] >= 0) == 0
    assert linear_record.settled(h, lambda m: m["v"] > 4) is None


# -- random labels and epochs to fit (issue 19) ------------------------------------------

def test_random_labels_train_on_the_randomization_machinerys_labels(monkeypatch):
    from kernelfit.data import load_split
    from kernelfit.data.randomize import parse_randomization

    seen = {}
    original = linear.fit_linear_sgd

    def spy(c, X, y, X_test, y_test, **kw):
        seen.update(y=np.array(y), y_test=np.array(y_test))
        seen["res"] = res = original(c, X, y, X_test, y_test, **kw)
        seen["K"] = np.exp(-scipy.linalg.norm(X[:, None] - X[None], axis=2) ** 2
                           / (2 * c.sigma ** 2))
        return res

    monkeypatch.setattr(linear, "fit_linear_sgd", spy)
    c = SGDLinearConfig(dataset="digits", n_train=150, n_test=40, seed=3, sigma=2.0,
                        batch_size=10, epochs=5, tol=0.0, randomize="random-labels")
    record = linear.run_sgd_linear(c, progress=False)
    # the labels `kernelfit run --randomize random-labels` would fit: same split, same seed
    train, test = load_split("digits", n_train=150, n_test=40, seed=3)
    rand_train, rand_test = parse_randomization("random-labels").apply(train, test, seed=3)
    np.testing.assert_array_equal(seen["y"], rand_train.labels)
    np.testing.assert_array_equal(seen["y_test"], test.labels)          # test labels clean
    assert np.mean(seen["y"] != train.labels) > 0.8                     # really shuffled
    assert record["randomization"] == "random-labels"
    # the record's train error is measured against those labels, from the final alpha
    pred = np.unique(seen["y"])[np.argmax(seen["K"] @ seen["res"].theta, axis=1)]
    assert record["train_error"] == pytest.approx(np.mean(pred != seen["y"]))
    assert record["train_error"] != pytest.approx(np.mean(pred != train.labels))


def test_randomize_keys_the_record_and_keeps_true_label_keys():
    plain = SGDLinearConfig()
    assert "randomize" not in plain.settings()          # as before the setting existed
    assert SGDLinearConfig(randomize="true-labels").settings() == plain.settings()
    rand = SGDLinearConfig(randomize="random-labels")
    assert rand.settings()["randomize"] == "random-labels"
    assert rand.settings() == SGDLinearConfig(randomize="labels:1").settings()
    assert rand.name() != plain.name() and "random-labels" in rand.name()
    assert SGDLinearConfig(randomize="labels:0.2").settings() != rand.settings()


@pytest.mark.parametrize("bad", ["labels:2", "shuffle", 3])
def test_bad_randomize_raises_input_error(bad):
    with pytest.raises(InputError, match="randomiz"):
        SGDLinearConfig(randomize=bad).settings()


def test_epochs_to_fit_is_the_first_epoch_a_numpy_replay_fits(rng):
    """Replay the SGD by hand (same batches, same step) and recompute the 0-1 train error
    of every epoch's alpha from K; the record's figure must be its first zero."""
    X = rng.standard_normal((40, 3))
    y = rng.integers(0, 3, 40)                  # labels unrelated to X: several epochs to fit
    c = SGDLinearConfig(n_train=None, kernel="gaussian", sigma=0.8, batch_size=5, epochs=60,
                        tol=0.0)
    res = fit_linear_sgd(c, X, y, X[:5], y[:5])
    record = linear_record._record(c, res.history, res.facts)
    K = np.exp(-scipy.linalg.norm(X[:, None] - X[None], axis=2) ** 2 / (2 * 0.8 ** 2))
    Y = _onehot(y)
    alpha, errors = np.zeros_like(Y), [np.mean(np.argmax(K @ np.zeros_like(Y), 1) != y)]
    order = np.random.default_rng([c.seed, 11])
    for _ in range(c.epochs):
        perm = order.permutation(40)
        for s in range(0, 40, 5):
            B = perm[s:s + 5]
            alpha[B] -= res.facts["lr"] * (K[B] @ alpha - Y[B])
        errors.append(np.mean(np.argmax(K @ alpha, 1) != y))
    np.testing.assert_allclose(alpha, res.theta, rtol=1e-9, atol=1e-12)   # the same run
    first = next(e for e, err in enumerate(errors) if err == 0)
    assert 1 < first < c.epochs
    assert record["epochs_to_fit"] == first
    assert linear_record.fit_text(record) == str(first)
    assert record["train_error_0_from_epoch"] >= first


def test_not_fitting_says_not_within_e_epochs(rng):
    X = rng.standard_normal((40, 3))
    y = rng.integers(0, 3, 40)
    c = SGDLinearConfig(n_train=None, sigma=0.8, batch_size=5, epochs=1, tol=0.0)
    res = fit_linear_sgd(c, X, y, X[:5], y[:5])
    record = linear_record._record(c, res.history, res.facts)
    assert record["epochs_to_fit"] is None
    assert linear_record.fit_text(record) == "not within 1 epochs"
    # a record made before the field existed: the same rule on its history
    del record["epochs_to_fit"]
    assert linear_record.fit_text(record) == "not within 1 epochs"


def test_cli_randomize_random_labels(tmp_path):
    assert _cli(tmp_path, "--n-train", "60", "--batch-size", "6", "--epochs", "2",
                "--randomize", "random-labels") == 0
    (record,) = tmp_path.glob("*random-labels*.json")
    saved = json.loads(record.read_text())
    assert saved["randomization"] == "random-labels"
    assert saved["config"]["randomize"] == "random-labels"
    assert _cli(tmp_path, "--n-train", "60", "--epochs", "1", "--randomize", "noise") == 2

"""A run never hides a wrong answer: planned before allocating, warnings in the record and
the table, --strict, hyper-parameters chosen on the training set only."""

import json
import time

import numpy as np
import pytest

from kernelfit.cli import main
from kernelfit.engine.plan import plan_fit
from kernelfit.errors import AccuracyError, PlanError
from kernelfit.options import Options
from kernelfit.pipeline import run as runmod
from kernelfit.pipeline.report import RunRecord
from kernelfit.pipeline.run import RunConfig, plan_run, run

SMALL = ["--n-train", "300", "--n-test", "100"]


def _no_call(name):
    def fail(*a, **k):
        raise AssertionError(f"{name} ran before the planner refused the run")
    return fail


# -- A1: plan first, counting everything --------------------------------------------------------
def test_streamed_run_is_refused_before_k_is_allocated(monkeypatch):
    """The old road built K and K_test, then planned with K 'already allocated'."""
    import kernelfit.engine.gram.stream as gs

    n, m, c = 300, 100, 10
    from kernelfit.features import make_features
    from kernelfit.pipeline.run_plan import _front_end_bytes

    # Room for the fit itself (K counted) and the front end's own work, but not for
    # K_test and a feature chunk besides.
    fit_only = plan_fit(n, 0, c, options=Options(memory_limit=2**40, dtype="float64"))
    front = _front_end_bytes(make_features("randconv", n_filters=4), n, m, (8, 8),
                             streamed=True, item=8)
    limit = fit_only.total_bytes + front + 1000
    monkeypatch.setattr(gs, "build_gram_streamed", _no_call("build_gram_streamed"))
    # A few random filters: the streamed road, cheaply.
    config = RunConfig(features="randconv", feature_params={"n_filters": 4}, stream=True,
                       n_train=n, n_test=m, options=Options(memory_limit=limit))
    t = time.perf_counter()
    with pytest.raises(PlanError) as exc:
        run(config)
    assert time.perf_counter() - t < 10
    assert "other allocations of the run" in str(exc.value)


def test_plan_counts_k_test_and_one_chunk():
    from kernelfit.features import make_features

    fmap = make_features("randconv", n_filters=16).fit(np.zeros((4, 8, 8), np.float32))
    n, m = 300, 100
    opts = Options(memory_limit=2**40, dtype="float64")
    plan = plan_run(fmap, n, m, 10, solver="cholesky", options=opts, streamed=True)
    cols = min(fmap.dim, runmod.STREAM_CHUNK_UNITS * fmap.features_per_unit)
    assert plan.gram_bytes == n * n * 8
    assert plan.extra_bytes >= m * n * 8 + (n + m) * cols * (4 + 8)
    in_memory = plan_run(fmap, n, m, 10, solver="cholesky", options=opts, streamed=False)
    assert in_memory.extra_bytes >= (n + m) * fmap.dim * 4


def test_in_memory_run_is_refused_before_features(monkeypatch):
    monkeypatch.setattr(runmod, "featurize", _no_call("featurization"))
    with pytest.raises(PlanError):
        run(RunConfig(n_train=300, n_test=100, options=Options(memory_limit=10**6)))


def test_streamed_run_records_its_plan():
    rec = run(RunConfig(features="randconv", feature_params={"n_filters": 4}, stream=True,
                        n_train=120, n_test=40))
    assert rec.memory_plan_bytes >= 120 * 120 * 8 + 40 * 120 * 8
    assert rec.train_error == 0.0 and rec.solver == "cholesky (streamed K)"


# -- A2: an inexact solve says so --------------------------------------------------------------
def test_record_table_shows_warnings_loudly():
    rec = RunRecord(dataset="digits", n_train=10, n_test=5, kernel={"name": "gaussian"},
                    solver="cg", dtype="float64", lam=0.0, train_error=0.0, test_error=0.2,
                    norm=1.0, relative_residual=0.3, converged=False,
                    warnings=["CG stopped after 5 iterations at residual 0.3 > tol 1e-06"])
    table = rec.table()
    assert "NOT CONVERGED" in table
    assert "WARNING      CG stopped after 5 iterations" in table
    back = RunRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert back.converged is False and back.warnings == rec.warnings


def test_cg_short_of_its_tolerance_is_reported(tmp_path, capsys):
    out = tmp_path / "cg.json"
    assert main(["run", "--quiet", "--solver", "cg", "--max-iter", "1", "--tol", "1e-10",
                 "--n-train", "400", "--n-test", "50", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["converged"] is False and record["warnings"]
    assert record["relative_residual"] > 1e-10
    printed = capsys.readouterr().out
    assert "WARNING" in printed and "NOT CONVERGED" in printed


def test_strict_makes_an_inexact_solve_an_error(capsys):
    assert main(["run", "--quiet", "--strict", "--solver", "cg", "--max-iter", "1",
                 "--tol", "1e-10", "--n-train", "400", "--n-test", "50"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kernelfit: error:")


def test_a_nan_solution_is_never_a_result(monkeypatch):
    from kernelfit.model import KernelInterpolantClassifier

    real_fit = KernelInterpolantClassifier._fit

    def nan_fit(self, X, y, plan=None):
        real_fit(self, X, y, plan)
        self.norm_ = float("nan")
        return self

    monkeypatch.setattr(KernelInterpolantClassifier, "_fit", nan_fit)
    with pytest.raises(AccuracyError, match="non-finite"):
        run(RunConfig(n_train=100, n_test=20))


# -- hyper-parameters on the training set only ------------------------------------------------
def test_sigma_auto_selects_on_a_training_split_only(tmp_path, monkeypatch, capsys):
    import kernelfit.pipeline.select as selmod

    seen = []
    real = selmod.select

    def spy(X, y, **kw):
        seen.append(len(X))
        return real(X, y, **kw)

    monkeypatch.setattr(selmod, "select", spy)
    out = tmp_path / "auto.json"
    assert main(["run", *SMALL, "--sigma", "auto", "--json", str(out)]) == 0
    assert seen == [300]                      # the training set, never the test set
    record = json.loads(out.read_text())
    sel = record["selection"]
    assert "training set" in sel["rule"]
    sigmas = sel["grid"]["sigma"]
    chosen = sel["params"]["sigma"]
    assert chosen in sigmas and len(sel["scores"]) == len(sigmas)
    best = min(s["val_error"] for s in sel["scores"])
    assert next(s for s in sel["scores"] if s["params"]["sigma"] == chosen)["val_error"] == best
    assert record["kernel"]["sigma"] == pytest.approx(chosen)
    captured = capsys.readouterr()
    assert "selected" in captured.out and "validation error" in captured.out
    assert "<- chosen" in captured.err          # every grid point's score is shown

    # The test split plays no part: another test subset, the same choice.
    out2 = tmp_path / "auto2.json"
    assert main(["run", "--quiet", "--n-train", "300", "--n-test", "50", "--sigma", "auto",
                 "--json", str(out2)]) == 0
    assert json.loads(out2.read_text())["selection"]["params"] == sel["params"]


def test_lam_auto_keeps_a_given_sigma(tmp_path):
    out = tmp_path / "lam.json"
    assert main(["run", "--quiet", *SMALL, "--sigma", "3", "--lam", "auto",
                 "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["selection"]["grid"]["sigma"] == [3.0]
    assert len(record["selection"]["grid"]["lam"]) > 1
    assert record["lam"] == record["selection"]["params"]["lam"]


def test_auto_with_a_streamed_k_is_refused(capsys):
    assert main(["run", "--quiet", *SMALL, "--features", "randconv", "--filters", "4",
                 "--stream", "--sigma", "auto"]) == 2
    assert "--no-stream" in capsys.readouterr().err


def test_auto_selection_is_planned_before_it_runs(monkeypatch):
    """The hold-out selection holds two n_f x n_f float64 matrices: more than a float32 fit."""
    import kernelfit.pipeline.select as selmod
    from kernelfit.features import make_features

    fmap = make_features("raw").fit(np.zeros((4, 8, 8), np.float32))
    n, m = 1200, 100
    big = Options(memory_limit=2**40, dtype="float32")
    fit = plan_run(fmap, n, m, 10, solver="cholesky", options=big, streamed=False)
    sel = runmod.plan_selection(fmap, n, m, 10, options=big)
    assert sel.total_bytes > fit.total_bytes
    limit = (fit.total_bytes + sel.total_bytes) // 2     # the fit fits, the selection not
    monkeypatch.setattr(selmod, "select", _no_call("select"))
    config = RunConfig(n_train=n, n_test=m, sigma="auto",
                       options=Options(memory_limit=limit, dtype="float32"))
    with pytest.raises(PlanError):
        run(config)
    run(RunConfig(n_train=n, n_test=m, sigma=2.0,
                  options=Options(memory_limit=limit, dtype="float32")))


def test_label_corruption_levels_share_cached_features(tmp_path, monkeypatch):
    """Label tests leave the images alone, so a corruption sweep computes features once."""
    from dataclasses import replace

    from kernelfit.features import make_features
    from kernelfit.pipeline import run as runmod

    cls = type(make_features("gabor"))
    calls = []
    original = cls.transform

    def counting(self, images, *args, **kwargs):
        calls.append(len(images))
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(cls, "transform", counting)
    default_root = tmp_path / "default-root"
    monkeypatch.setenv("KERNELFIT_DATA", str(default_root))
    home = tmp_path / "home"
    base = runmod.RunConfig(n_train=60, n_test=30, features="gabor", sigma=5.0,
                            data_home=str(home))
    first = runmod.run(replace(base, randomize="labels:0"))
    n_first = len(calls)
    second = runmod.run(replace(base, randomize="labels:0.5"))
    assert n_first == 2 and len(calls) == n_first          # train + test, then all from cache
    # The features sit under the run's own data home, never in the default root's cache.
    assert len(list((home / "features").glob("gabor-*.npy"))) == 2
    assert not (default_root / "features").exists()
    assert first.randomization != second.randomization
    runmod.run(replace(base, randomize="shuffled-pixels"))
    assert len(calls) == n_first + 2                         # new images: new features

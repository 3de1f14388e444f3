"""`kernelfit sweep`: grids of runs, resumable records, the CSV, failures and the study plots."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from kernelfit.cli import build_parser, main
from kernelfit.errors import InputError, KernelfitError, PlanError
from kernelfit.options import Options
from kernelfit.pipeline.run import RunConfig, run
from kernelfit.studies import sweeps
from kernelfit.studies.sweeps import parse_axis, parse_value, run_sweep

BASE = RunConfig(n_test=100, feature_cache=False)
AXES_2X2 = ["n_train=100,200", "randomize=none,labels:0.5"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _sweep(tmp_path, specs=AXES_2X2, base=BASE, **kw):
    return run_sweep(base, [parse_axis(s) for s in specs], tmp_path, log=lambda *_: None, **kw)


def test_two_by_two_writes_four_records_and_a_matching_csv(tmp_path):
    result = _sweep(tmp_path)
    records = sorted((tmp_path / "points").glob("*.json"))
    assert len(records) == 4 and [p.status for p in result.points] == ["ok"] * 4
    rows = _rows(tmp_path / "sweep.csv")
    assert [(r["n_train"], r["randomize"]) for r in rows] == [
        ("100", "none"), ("100", "labels:0.5"), ("200", "none"), ("200", "labels:0.5")]
    for row in rows:
        saved = json.loads((tmp_path / row["record"]).read_text())
        rec = saved["record"]
        assert saved["status"] == row["status"] == "ok"
        assert float(row["test_error"]) == rec["test_error"]
        assert float(row["norm"]) == rec["norm"] and float(row["train_error"]) == 0.0
        assert int(row["n_train"]) == rec["n_train"] and rec["n_test"] == 100
        assert rec["randomization"] == saved["settings"]["randomize"]
    # Oracle: a point is exactly the run of its config, made directly.
    direct = run(replace(BASE, n_train=200, randomize="labels:0.5"))
    assert float(rows[3]["norm"]) == pytest.approx(direct.norm, rel=1e-12)
    assert float(rows[3]["test_error"]) == direct.test_error
    # Corrupted labels are harder to interpolate: a larger norm at both n.
    assert float(rows[1]["norm"]) > float(rows[0]["norm"])
    assert float(rows[3]["norm"]) > float(rows[2]["norm"])
    table = (tmp_path / "sweep.md").read_text()
    assert table.count("\n| 100 |") == 2 and "| 200 | labels:0.5 |" in table


def test_rerun_reuses_points_without_fitting(tmp_path, monkeypatch):
    _sweep(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "points").glob("*.json")}

    def no_fit(config):
        raise AssertionError("a finished point was fitted again")
    monkeypatch.setattr(sweeps, "run", no_fit)
    # Display/resource options are not part of a point's key.
    base = replace(BASE, options=Options(n_jobs=1, progress=True))
    again = _sweep(tmp_path, base=base)
    assert all(p.reused and p.status == "ok" for p in again.points)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "points").glob("*.json")} == stamps
    # A result-changing setting is a new point: here it must fit (and fails loudly).
    changed = _sweep(tmp_path, base=replace(BASE, seed=1))
    assert [p.status for p in changed.points] == ["failed"] * 4
    assert "a finished point was fitted again" in changed.points[0].error


@pytest.mark.parametrize("name, text, value", [
    ("n_train", "1000", 1000), ("n_train", "1e4", 10000), ("n_train", "none", None),
    ("sigma", "3", 3.0), ("lam", "0", 0.0), ("seed", "7", 7),
    ("randomize", "labels:0", "none"), ("randomize", "labels:1", "random-labels"),
    ("randomize", "labels:0.2", "labels:0.2"), ("stream", "true", True),
    ("stream", "none", None), ("jitter", "auto", "auto"), ("jitter", "1e-6", 1e-6),
    ("dtype", "float32", "float32"), ("features", "gabor", "gabor"),
    ("preprocessing", "scale+whiten", "scale,whiten"),
    ("feature_params", "J=1+L=8", {"J": 1, "L": 8}),
])
def test_vary_values_are_parsed_to_the_field_type(name, text, value):
    parsed = parse_value(name, text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("spec, says", [
    ("n_trian=1,2", "n_train"), ("quiet=1,2", "valid:"), ("n_train=abc", "int"),
    ("n_train=1.5", "int"), ("sigma=-1", "> 0"), ("features=foo", "raw, gabor"),
    ("randomize=labels:2", "valid"), ("dtype=float16", "dtype"), ("n_train", "NAME=V1"),
    ("n_train=1000,1e3", "twice"), ("feature_params=J", "KEY=VALUE"),
])
def test_bad_axes_are_input_errors_that_say_what_is_valid(spec, says):
    with pytest.raises(InputError, match=says):
        parse_axis(spec)


def test_grid_refuses_no_axes_and_repeated_axes(tmp_path):
    with pytest.raises(InputError, match="at least one"):
        run_sweep(BASE, [], tmp_path)
    with pytest.raises(InputError, match="twice"):
        _sweep(tmp_path, ["seed=0,1", "seed=2,3"])


def test_plots_are_drawn_when_the_axes_exist(tmp_path):
    result = _sweep(tmp_path)
    for name in ("error_vs_corruption", "norm_vs_n"):
        png = tmp_path / f"{name}.png"
        assert result.files[name] == png and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "features" in result.skipped_plots["norm_vs_error"]
    fronts = _sweep(tmp_path / "fronts", ["features=raw,gabor"], base=replace(BASE, n_train=100))
    assert (tmp_path / "fronts" / "norm_vs_error.png").read_bytes()[:4] == b"\x89PNG"
    assert set(fronts.skipped_plots) == {"error_vs_corruption", "norm_vs_n"}


def test_a_failing_point_is_recorded_not_dropped(tmp_path, monkeypatch):
    real = sweeps.run

    def flaky(config):
        if config.n_train == 200 and config.randomize == "none":
            raise PlanError("K does not fit in memory: try --dtype float32")
        return real(config)
    monkeypatch.setattr(sweeps, "run", flaky)
    result = _sweep(tmp_path)
    assert [p.status for p in result.points] == ["ok", "ok", "failed", "ok"]
    rows = _rows(tmp_path / "sweep.csv")
    assert len(rows) == 4 and rows[2]["status"] == "failed"
    assert rows[2]["error"] == "PlanError: K does not fit in memory: try --dtype float32"
    assert rows[2]["test_error"] == "" and rows[3]["test_error"] != ""
    saved = json.loads((tmp_path / rows[2]["record"]).read_text())
    assert saved["status"] == "failed" and "PlanError" in saved["error"]
    assert "failed: PlanError" in (tmp_path / "sweep.md").read_text()
    # A failure is retried on the next run; the finished points are reused.
    monkeypatch.setattr(sweeps, "run", real)
    again = _sweep(tmp_path)
    assert [p.reused for p in again.points] == [True, True, False, True]
    assert all(p.status == "ok" for p in again.points)


def test_fail_fast_lists_the_points_it_did_not_run(tmp_path, monkeypatch):
    def broken(config):
        raise KernelfitError("boom")
    monkeypatch.setattr(sweeps, "run", broken)
    result = _sweep(tmp_path, fail_fast=True)
    assert [p.status for p in result.points] == ["failed", "not-run", "not-run", "not-run"]
    assert len(_rows(tmp_path / "sweep.csv")) == 4


def test_sigma_auto_selects_on_clean_training_data_and_holds_it_fixed(tmp_path, monkeypatch):
    from kernelfit.pipeline import select as select_module
    seen = []
    real = select_module.select

    def spy(X, y, **kw):
        seen.append((len(X), np.bincount(y, minlength=10)))
        return real(X, y, **kw)
    monkeypatch.setattr(select_module, "select", spy)
    base = replace(BASE, n_train=150, sigma="auto")
    result = _sweep(tmp_path, ["n_train=100,200", "randomize=none,labels:1"], base=base)
    assert len(seen) == 1 and seen[0][0] == 150          # once, on the base n_train
    sigma = result.selections[0]["params"]["sigma"]
    rows = _rows(tmp_path / "sweep.csv")
    for p, row in zip(result.points, rows, strict=True):
        assert p.record["kernel"]["sigma"] == pytest.approx(sigma)
        assert p.settings["selection"]["params"]["sigma"] == sigma
        assert float(row["sigma"]) == pytest.approx(sigma)
        assert "training set" in row["selection_rule"] and json.loads(row["selected"])
    # The selection saw clean labels: the clean base subset's own class counts.
    from kernelfit.data import load_split
    train, _ = load_split("digits", n_train=150, n_test=100, seed=0)
    assert np.array_equal(seen[0][1], np.bincount(train.labels, minlength=10))
    with pytest.raises(InputError, match="sigma auto"):
        _sweep(tmp_path, ["sigma=1,2"], base=replace(BASE, sigma="auto"))


def test_cli_runs_exits_nonzero_on_failures_and_is_quiet(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["sweep", "--n-test", "100", "--no-feature-cache", "--out", str(out),
            "--vary", "n_train=100,5000"]           # digits has 1,297 training images
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "[1/2] n_train=100: train 0.00%" in captured.out
    assert "failed: InputError: n_train=5000" in captured.err
    rows = _rows(out / "sweep.csv")
    assert [r["status"] for r in rows] == ["ok", "failed"] and "n_train=5000" in rows[1]["error"]
    listing = tmp_path / "all.json"
    assert main([*args, "--allow-failures", "--quiet", "--json", str(listing)]) == 0
    quiet_out = capsys.readouterr().out            # no progress lines, the table only
    assert "[1/2]" not in quiet_out and quiet_out.startswith("| n_train |")
    points = json.loads(listing.read_text())
    assert [p["status"] for p in points] == ["ok", "failed"]
    assert points[0]["record"]["test_error"] == float(rows[0]["test_error"])
    assert main(["sweep", "--vary", "bogus=1", "--quiet"]) == 2
    assert "unknown sweep axis 'bogus'" in capsys.readouterr().err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["sweep", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "kernelfit sweep --dataset mnist" in text and "--vary" in text and "n_train" in text


def test_a_failed_selection_fails_the_points_that_need_it(tmp_path):
    base = replace(BASE, n_train=100, sigma="auto")
    result = _sweep(tmp_path, ["kernel=gaussian,linear"], base=base)
    assert [p.status for p in result.points] == ["ok", "failed"]
    assert "selection failed: InputError: the linear kernel has no bandwidth" in \
        result.points[1].error
    row = _rows(tmp_path / "sweep.csv")[1]
    assert row["status"] == "failed" and row["error"].startswith("selection failed")
    assert json.loads((tmp_path / row["record"]).read_text())["status"] == "failed"
    with pytest.raises(InputError, match="auto"):
        parse_axis("sigma=1,auto")


def test_results_are_checked_warnings_kept_and_non_finite_points_fail(tmp_path, monkeypatch):
    import warnings
    real = sweeps.run

    def odd(config):
        record = real(config)
        if config.n_train == 100:
            warnings.warn("solve less exact than float64 allows", UserWarning, stacklevel=2)
            record.relative_residual = 1e-3
        else:
            record.norm = float("nan")
        return record
    monkeypatch.setattr(sweeps, "run", odd)
    result = _sweep(tmp_path)
    assert [p.status for p in result.points] == ["ok", "ok", "failed", "failed"]
    assert result.points[2].error.startswith("non-finite result")
    row = _rows(tmp_path / "sweep.csv")[0]
    assert "UserWarning: solve less exact than float64 allows" in row["warnings"]
    assert "relative residual 1.00e-03 > 1e-06 for float64" in row["warnings"]

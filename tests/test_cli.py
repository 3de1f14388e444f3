"""The `kernelfit` command, called in process through its entry point."""

import argparse
import io
import json
import re
import time

import pytest

from kernelfit.cli import build_parser, main
from kernelfit.pipeline.report import stage

SMALL = ["--n-train", "300", "--n-test", "100"]


def _subparser(name):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_run_on_digits_writes_a_record(tmp_path, capsys):
    out = tmp_path / "out.json"
    assert main(["run", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["dataset"] == "digits"
    assert record["train_error"] == 0.0
    assert record["test_error"] < 0.05
    assert record["norm"] > 0 and record["relative_residual"] < 1e-6
    assert set(record["timings"]) >= {"gram", "factor", "solve", "predict"}
    assert record["backend"] == "numpy" and record["device"] == "cpu"
    assert record["converged"] is True and record["warnings"] == []
    printed = capsys.readouterr().out
    assert "train error" in printed and "0.00%" in printed and "norm" in printed
    assert "WARNING" not in printed
    assert f"record written to {out}" in printed


def test_quiet_hides_progress_but_keeps_the_table(capsys):
    assert main(["run", "--quiet", *SMALL, "--kernel", "laplacian", "--sigma", "20"]) == 0
    captured = capsys.readouterr()
    assert "test error" in captured.out and "laplacian" in captured.out
    assert captured.err == ""


def test_progress_reaches_the_feature_cache(monkeypatch):
    import kernelfit.features.cache as cache
    from kernelfit.features import make_features
    from kernelfit.options import Options
    from kernelfit.pipeline.run import RunConfig, featurize, prepare

    seen = []

    def spy(fmap, images, *, key, progress=False, **kw):
        seen.append(progress)
        return fmap.transform(images)

    monkeypatch.setattr(cache, "cached_transform", spy)
    config = RunConfig(features="gabor", n_train=20, n_test=10, options=Options(progress=True))
    fmap = make_features("gabor").fit(prepare(config).train_images)
    featurize(config, fmap, prepare(config))
    assert seen == [True, True]


def test_stage_spinner_shows_elapsed_and_expected_time():
    buf = io.StringIO()
    with stage("predict", expected_s=3.0, delay=0.0, interval=0.05, file=buf):
        time.sleep(0.3)
    shown = buf.getvalue()
    assert "predict" in shown and "elapsed" in shown and "expected ~3 s" in shown
    quiet = io.StringIO()
    with stage("predict", expected_s=3.0, enabled=False, delay=0.0, file=quiet):
        time.sleep(0.1)
    assert quiet.getvalue() == ""
    short = io.StringIO()
    with stage("predict", delay=5.0, file=short):   # over before the delay: nothing shown
        pass
    assert short.getvalue() == ""


def test_stage_expects_flops_over_the_measured_gemm_rate(monkeypatch):
    import kernelfit.pipeline.report as report

    monkeypatch.setattr(report, "gemm_gflops", lambda dtype="float64": 10.0)
    buf = io.StringIO()
    with stage("fit", flops=1.2e12, delay=0.0, interval=0.05, file=buf):   # 120 s at 10
        time.sleep(0.2)
    assert "expected ~2.0 min" in buf.getvalue()
    assert report.expected_seconds(1e10, "float32") == pytest.approx(1.0)


def test_bad_input_is_a_clean_error(capsys):
    assert main(["run", "--feature-param", "oops", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kernelfit: error:") and "KEY=VALUE" in err


@pytest.mark.parametrize("option, value, says", [
    ("--jitter", "abc", "expected a number, got 'abc'"),
    ("--jitter", "nan", "finite"),
    ("--sigma", "-1", "must be > 0"),
    ("--sigma", "abc", "expected a number"),
    ("--lam", "-0.1", "must be >= 0"),
    ("--block-size", "-5", "must be >= 1"),
    ("--block-size", "0", "must be >= 1"),
    ("--max-iter", "0", "must be >= 1"),
    ("--tol", "nan", "finite"),
    ("--tol", "2", "between 0 and 1"),
    ("--filters", "0", "must be >= 1"),
    ("--degree", "2.5", "whole number"),
    ("--n-train", "0", "must be >= 1"),
    ("--seed", "-1", "must be >= 0"),
    ("--memory-limit", "lots", "a size like"),
])
def test_nonsense_numbers_are_refused_by_the_parser(option, value, says, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err and says in err and "Traceback" not in err


@pytest.mark.parametrize("sigma", ["1e-300", "1e300"])
def test_extreme_bandwidths_are_typed_errors(sigma, capsys):
    assert main(["run", "--quiet", *SMALL, "--sigma", sigma]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kernelfit: error:") and "sigma" in err


def test_a_gpu_device_needs_a_gpu_backend(capsys):
    assert main(["run", "--device", "bogus", "--quiet"]) == 2
    assert "'cpu', 'cuda' or 'cuda:N'" in capsys.readouterr().err
    assert main(["run", "--backend", "numpy", "--device", "cuda", "--quiet"]) == 2
    assert "backend 'numpy' runs in host memory" in capsys.readouterr().err


def test_memory_limit_option_reaches_the_planner(capsys):
    t = time.perf_counter()
    assert main(["run", "--quiet", *SMALL, "--memory-limit", "1MB"]) == 2
    assert time.perf_counter() - t < 10
    err = capsys.readouterr().err
    assert "kernelfit: error:" in err and "1.0 MB is available" in err


# -- output paths ------------------------------------------------------------------------
def test_json_to_a_directory_fails_before_the_fit(tmp_path, monkeypatch, capsys):
    import kernelfit.pipeline.run as runmod

    def no_fit(*a, **k):
        raise AssertionError("the fit ran before the output path was checked")

    monkeypatch.setattr(runmod, "prepare", no_fit)
    assert main(["run", "--json", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kernelfit: error:") and "is a directory" in err


def test_json_write_failure_after_the_fit_keeps_the_table(tmp_path, monkeypatch, capsys):
    from kernelfit.pipeline.report import RunRecord

    def disk_full(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunRecord, "write_json", disk_full)
    assert main(["run", "--quiet", *SMALL, "--json", str(tmp_path / "r.json")]) == 2
    captured = capsys.readouterr()
    assert "test error" in captured.out
    assert "the record could not be written" in captured.err
    assert "No space left on device" in captured.err


# -- the torch backend says where it ran ----------------------------------------------------
def test_torch_without_a_gpu_says_so_and_records_the_device(tmp_path, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "t.json"
    assert main(["run", "--backend", "torch", *SMALL, "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "no CUDA device" in captured.err and "on the CPU" in captured.err
    record = json.loads(out.read_text())
    assert record["backend"] == "torch" and record["device"] == "cpu"
    assert "torch on cpu" in captured.out
    assert "note" in captured.out and "no CUDA device" in captured.out
    numpy_out = tmp_path / "n.json"
    assert main(["run", "--quiet", *SMALL, "--json", str(numpy_out)]) == 0
    assert record["test_error"] == json.loads(numpy_out.read_text())["test_error"]


# -- help -------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["run"], ["predict"], ["data"]])
def test_help_reads(command, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*command, "--help"])
    assert exc.value.code == 0
    assert "kernelfit" in capsys.readouterr().out


@pytest.mark.parametrize("command", [[], ["run"], ["predict"]])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "kernelfit run" in text


@pytest.mark.parametrize("name", ["run", "predict"])
def test_every_option_has_help_and_states_its_default_once(name, capsys):
    parser = _subparser(name)
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    options = re.split(r"\n  (?=-)", text.split("examples:")[0])
    for block in options:
        assert len(re.findall(r"default", block)) <= 1, block
    assert "(default: None)" not in text and "(default: False)" not in text
    if name == "run":
        assert "{auto,float32,float64}" in text


def test_dtype_auto_is_accepted(capsys):
    assert main(["run", "--quiet", *SMALL, "--dtype", "auto"]) == 0
    assert "float64" in capsys.readouterr().out


def test_library_warnings_print_as_one_plain_line(monkeypatch, capsys):
    import warnings

    import kernelfit.cli.run_cmd as run_cmd
    from kernelfit.errors import AccuracyWarning, KernelfitError

    def warn_then_fail(*a, **k):
        warnings.warn("the solve is inexact", AccuracyWarning, stacklevel=2)
        raise KernelfitError("stopped")

    monkeypatch.setattr(run_cmd, "fit_run", warn_then_fail)
    assert main(["run", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "kernelfit: warning: the solve is inexact" in err
    assert "AccuracyWarning" not in err and ".py:" not in err


def test_a_missing_plots_extra_is_said_before_any_work(monkeypatch, capsys, tmp_path):
    """Without matplotlib, a command asked to draw fails at once with the extra to install,
    and runs nothing (here: no sweep point is fitted)."""
    import builtins

    from kernelfit.cli import main

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    out = tmp_path / "s"
    assert main(["sweep", "--vary", "n_train=300,600", "--out", str(out)]) == 2
    assert "pip install \"kernelfit[plots]\"" in capsys.readouterr().err
    assert not out.exists()
    assert main(["sweep", "--vary", "n_train=300", "--no-plot", "--out", str(out)]) == 0


def test_plan_says_where_k_lives_before_any_work(capsys, tmp_path):
    assert main(["plan", "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert "K lives in   host memory, one in-place n x n buffer" in out
    assert "expected     Gram " in out and "1 panel)" in out
    # K's tiles on disk, three panels in RAM
    assert main(["plan", "--dataset", "digits", "--storage", "disk", "--scratch",
                 str(tmp_path), "--tile-size", "256", "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    assert "lower tiles in a file on disk" in out and str(tmp_path) in out
    import json
    plan = json.loads((tmp_path / "p.json").read_text())["plan"]
    assert plan["storage"] == "disk tiles" and plan["tile"] == 256
    assert not list(tmp_path.glob("*.tiles.npy"))          # planned, nothing built
    # memory only, and it does not fit: refused, with the disk as a way out
    assert main(["plan", "--dataset", "digits", "--memory-limit", "2MB", "--storage",
                 "memory"]) == 2
    assert "--storage disk" in capsys.readouterr().err


def test_pcg_stopping_flags_reach_the_options():
    from kernelfit.cli.settings import run_config
    args = build_parser().parse_args(["run", "--solver", "pcg", "--val-fraction", "0.1",
                                      "--patience", "7", "--val-min-iter", "3"])
    opts = run_config(args).options
    assert (opts.val_fraction, opts.patience, opts.val_min_iter) == (0.1, 7, 3)

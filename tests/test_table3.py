"""Table 3 reproduction: settings chosen on training data only, rows resumed by what changes
their numbers, the table says what ran, the figure is drawn."""

import json
from dataclasses import replace

import numpy as np
import pytest

from kernelfit import data as kdata
from kernelfit.cli import main as cli_main
from kernelfit.errors import InputError
from kernelfit.options import Options
from kernelfit.pipeline.run import RunConfig
from kernelfit.studies import table3


@pytest.fixture
def digits_rows(monkeypatch):
    def rows(filters=4096, lam=1e-3):
        base = RunConfig(dataset="digits", sigma=10.0)
        return [table3.Row("digits-raw", 0.02, "none", base, ("scale", "scale,whiten")),
                table3.Row("digits-l2", 0.02, "l2", replace(base, lam=lam), select_lam=True)]
    monkeypatch.setattr(table3, "rows", rows)
    monkeypatch.setattr(table3, "L2_LAM_FACTORS", (1e-3, 1e-2))     # a shorter grid: speed


def test_rows_are_the_papers():
    keys = {r.key: r for r in table3.rows(filters=64)}
    assert keys["mnist-raw"].paper_error == 0.012 and keys["mnist-raw"].config.sigma == 5.0
    assert keys["cifar10-randconv"].config.feature_params == {"n_filters": 64}
    assert keys["cifar10-randconv-l2"].config.lam > 0 and keys["cifar10-randconv-l2"].select_lam
    # Appendix A's per-image whitening is a candidate of both raw-pixel rows
    assert "scale,whiten" in keys["cifar10-raw"].preprocessings
    assert "scale,whiten" in keys["mnist-raw"].preprocessings


def test_fixed_settings_resume_and_tabulate(tmp_path, digits_rows):
    logs = []
    first = table3.reproduce(tmp_path, n_train=300, n_test=200, select_settings=False,
                             log=logs.append)
    assert [r["record"]["train_error"] for r in first] == [0.0, 0.0]
    assert all(r["record"]["test_error"] < 0.1 for r in first)
    assert all(r["record"]["selection"] is None for r in first)
    stamp = (tmp_path / "digits-raw.json").stat().st_mtime_ns
    logs.clear()
    again = table3.reproduce(tmp_path, n_train=300, n_test=200, select_settings=False,
                             log=logs.append)
    assert all("reusing" in line for line in logs)
    assert (tmp_path / "digits-raw.json").stat().st_mtime_ns == stamp
    assert again == first
    # other settings are a different experiment: rerun, not reused
    logs.clear()
    table3.reproduce(tmp_path, keys=["digits-raw"], n_train=250, n_test=200,
                     select_settings=False, log=logs.append)
    assert logs[0] == "digits-raw: record was made with other settings (n_train); recomputing"
    assert "running" in logs[1]
    md = table3.markdown(first)
    assert md.count("| digits-") == 2 and "| 2.0% |" in md and "sigma 10" in md


def test_display_options_do_not_rerun_a_row(tmp_path, digits_rows):
    """Issue 7 A8: --quiet (progress off), a memory cap or threads changed the resume key."""
    table3.reproduce(tmp_path, keys=["digits-raw"], n_train=200, n_test=100,
                     select_settings=False, options=Options(progress=True), log=print)
    stamp = (tmp_path / "digits-raw.json").stat().st_mtime_ns
    logs = []
    table3.reproduce(tmp_path, keys=["digits-raw"], n_train=200, n_test=100,
                     select_settings=False, log=logs.append,
                     options=Options(progress=False, memory_limit=2**33, n_jobs=1))
    assert logs and all("reusing" in line for line in logs)
    assert (tmp_path / "digits-raw.json").stat().st_mtime_ns == stamp
    # a result-changing option is a rerun
    logs.clear()
    table3.reproduce(tmp_path, keys=["digits-raw"], n_train=200, n_test=100,
                     select_settings=False, options=Options(dtype="float32"),
                     log=logs.append)
    assert any("running" in line for line in logs)


@pytest.mark.filterwarnings("ignore::kernelfit.errors.SubsetWarning")  # 1 test image
def test_settings_are_selected_on_validation_and_recorded(tmp_path, digits_rows):
    res = table3.reproduce(tmp_path, n_train=300, n_test=200, log=lambda *_: None)
    for r in res:
        sel = r["record"]["selection"]
        assert sel["n_select"] == 300 and (sel["n_fit"], sel["n_val"]) == (240, 60)
        assert "hold-out 20% of the training set" in sel["rule"]
        chosen = sel["chosen"]
        cand = sel["candidates"][chosen["preprocessing"]]
        # the chosen sigma is the best of its grid, and its candidate the best candidate
        assert sel["val_error"] == min(s["val_error"] for s in cand["scores"])
        assert sel["val_error"] == min(min(s["val_error"] for s in c["scores"])
                                       for c in sel["candidates"].values())
        # and it is what ran
        assert r["record"]["kernel"]["sigma"] == pytest.approx(chosen["sigma"])
        assert r["record"]["lam"] == chosen["lam"]
    raw, l2 = res
    assert set(raw["record"]["selection"]["candidates"]) == {"scale", "scale,whiten"}
    assert raw["record"]["lam"] == 0.0
    assert l2["record"]["lam"] in table3.L2_LAM_FACTORS           # > 0: a regularized row
    md = table3.markdown(res)
    assert "validation split carved from each row's training data" in md


@pytest.mark.filterwarnings("ignore::kernelfit.errors.SubsetWarning")  # 1 test image
def test_selection_never_reads_test_labels(tmp_path, digits_rows, monkeypatch):
    honest = table3.reproduce(tmp_path / "a", keys=["digits-raw"], n_train=300, n_test=200,
                              log=lambda *_: None)
    real = kdata.load_split

    def scrambled(*args, **kwargs):
        train, test = real(*args, **kwargs)
        labels = np.random.default_rng(7).permutation(test.labels)
        return train, replace(test, labels=labels)

    monkeypatch.setattr(kdata, "load_split", scrambled)
    other = table3.reproduce(tmp_path / "b", keys=["digits-raw"], n_train=300, n_test=200,
                             log=lambda *_: None)
    a, b = honest[0]["record"], other[0]["record"]
    assert a["test_error"] != b["test_error"]            # the test labels did change ...
    for k in ("chosen", "val_error"):                    # ... and the selection did not
        assert a["selection"][k] == b["selection"][k]
    for pre, cand in a["selection"]["candidates"].items():
        assert cand["scores"] == b["selection"]["candidates"][pre]["scores"]
        assert cand["params"] == b["selection"]["candidates"][pre]["params"]


def test_a_subset_missing_classes_is_warned(tmp_path, digits_rows):
    logs = []
    with pytest.warns(UserWarning, match="holds 5 of its 10 classes"):
        res = table3.reproduce(tmp_path, keys=["digits-raw"], n_train=5, n_test=50,
                               select_settings=False, log=logs.append)
    assert res[0]["warnings"] and "Warnings:" in table3.markdown(res)


def test_labels_say_what_ran():
    conv = {r.key: r for r in table3.rows(filters=256)}["cifar10-randconv"]
    text = table3._describe(conv.config)
    assert "randconv 256 filters (paper 32,000)" in text and "streamed" in text
    full = {r.key: r for r in table3.rows(filters=32_000)}["cifar10-randconv"]
    assert "(paper" not in table3._describe(full.config)
    assert "sigma 5" in table3._describe({r.key: r for r in table3.rows()}["mnist-raw"].config)


@pytest.mark.parametrize("seconds, text", [(0.0423, "0.042 s"), (3.14, "3.1 s"),
                                           (47.2, "47 s"), (725.0, "12 min 5 s")])
def test_times_have_sensible_precision(seconds, text):
    assert table3.seconds_text(seconds) == text


def test_unknown_row_and_bad_n_select(tmp_path, digits_rows):
    with pytest.raises(InputError, match="digits-raw"):
        table3.reproduce(tmp_path, keys=["nope"])
    with pytest.raises(InputError, match="n_select"):
        table3.reproduce(tmp_path, n_select=3)


def test_cli_prints_table_paths_and_draws_the_figure(tmp_path, digits_rows, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "t3"
    assert cli_main(["table3", "--n-train", "200", "--n-test", "100", "--plot", "--quiet",
                     "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| digits-raw |" in text and f"figure: {out / 'table3.png'}" in text
    assert f"table: {out / 'table3.md'}" in text and str(out / "digits-l2.json") in text
    png = (out / "table3.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    saved = json.loads((out / "digits-raw.json").read_text())
    assert saved["record"]["selection"]["chosen"]["preprocessing"] in ("scale", "scale,whiten")

"""Table 3 reproduction: rows run once, records are reused, the table says paper vs measured."""

from dataclasses import replace

import pytest

from kernelfit.errors import InputError
from kernelfit.experiments import table3
from kernelfit.experiments.run import RunConfig


@pytest.fixture
def digits_rows(monkeypatch):
    def rows(filters=4096, lam=1e-3):
        base = RunConfig(dataset="digits", sigma=10.0)
        return [table3.Row("digits-raw", 0.02, "none", base),
                table3.Row("digits-l2", 0.02, "l2", replace(base, lam=lam))]
    monkeypatch.setattr(table3, "rows", rows)


def test_rows_are_the_papers():
    keys = {r.key: r for r in table3.rows(filters=64)}
    assert keys["mnist-raw"].paper_error == 0.012 and keys["mnist-raw"].config.sigma == 5.0
    assert keys["cifar10-randconv"].config.feature_params == {"n_filters": 64}
    assert keys["cifar10-randconv-l2"].config.lam > 0


def test_reproduce_resumes_and_tabulates(tmp_path, digits_rows):
    logs = []
    first = table3.reproduce(tmp_path, n_train=300, n_test=200, log=logs.append)
    assert [r["record"]["train_error"] for r in first] == [0.0, 0.0]
    assert all(r["record"]["test_error"] < 0.1 for r in first)
    stamp = (tmp_path / "digits-raw.json").stat().st_mtime_ns
    logs.clear()
    again = table3.reproduce(tmp_path, n_train=300, n_test=200, log=logs.append)
    assert all("reusing" in line for line in logs)
    assert (tmp_path / "digits-raw.json").stat().st_mtime_ns == stamp
    assert again == first
    # other settings are a different experiment: rerun, not reused
    logs.clear()
    table3.reproduce(tmp_path, keys=["digits-raw"], n_train=250, n_test=200, log=logs.append)
    assert "running" in logs[0]
    md = table3.markdown(first)
    assert md.count("\n") == 4 and "| digits-raw |" in md and "2.0%" in md


def test_unknown_row(tmp_path, digits_rows):
    with pytest.raises(InputError, match="digits-raw"):
        table3.reproduce(tmp_path, keys=["nope"])

"""The `kernelfit` command, called in process through its entry point."""

import json

import pytest
from kernelfit.cli import build_parser, main


def test_run_on_digits_writes_a_record(tmp_path, capsys):
    out = tmp_path / "out.json"
    assert main(["run", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["dataset"] == "digits"
    assert record["train_error"] == 0.0
    assert record["test_error"] < 0.05
    assert record["norm"] > 0 and record["relative_residual"] < 1e-6
    assert set(record["timings"]) >= {"gram", "factor", "solve", "predict"}
    printed = capsys.readouterr().out
    assert "train error" in printed and "0.00%" in printed and "norm" in printed


def test_quiet_prints_nothing(tmp_path, capsys):
    assert main(["run", "--quiet", "--n-train", "300", "--kernel", "laplacian",
                 "--sigma", "20"]) == 0
    assert capsys.readouterr().out == ""


def test_bad_input_is_a_clean_error(capsys):
    assert main(["run", "--sigma", "-1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kernelfit: error:") and "sigma" in err
    assert main(["run", "--feature-param", "oops", "--quiet"]) == 2


@pytest.mark.parametrize("command", [[], ["run"], ["data"]])
def test_help_reads(command, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*command, "--help"])
    assert exc.value.code == 0
    assert "kernelfit" in capsys.readouterr().out

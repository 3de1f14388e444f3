"""`kernelfit bench solve`: table, JSON and PNG from tiny CPU runs; skips; typed refusals."""

import json

import numpy as np
import pytest

from kernelfit.cli import main
from kernelfit.engine.backend import device as bench_device
from kernelfit.engine.solvers import solution as solution_mod
from kernelfit.errors import AccuracyWarning, InputError
from kernelfit.studies import bench

# A small peak matmul keeps each test to a few seconds.
FAST = ["--peak-size", "256", "--quiet"]


def _run(tmp_path, *args):
    out = tmp_path / "bench"
    status = main(["bench", "solve", *args, *FAST, "--out", str(out)])
    return status, out


def test_numpy_cpu_writes_table_json_and_png(tmp_path, capsys):
    status, out = _run(tmp_path, "--n", "500", "1000", "--backend", "numpy")
    assert status == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "bench_solve.json").read_text())
    assert {"config", "versions", "devices", "peaks", "rows", "tf32"} <= set(doc)
    assert doc["devices"]["numpy"]["name"] and doc["versions"]["numpy"] == np.__version__
    peaks = doc["peaks"]["numpy/cpu"]
    assert set(peaks) == {"float32", "float64"} and all(p["gflops"] > 0 for p in peaks.values())
    rows = doc["rows"]
    assert sorted((r["dtype"], r["n"]) for r in rows) == [
        ("float32", 500), ("float32", 1000), ("float64", 500), ("float64", 1000)]
    for r in rows:
        n = r["n"]
        assert r["status"] == "ok" and r["converged"] is True and r["warnings"] == []
        for key in ("gram_s", "factor_s", "solve_s", "total_s"):
            assert r[key] > 0
        assert r["total_s"] >= r["gram_s"] + r["factor_s"] + r["solve_s"]
        # The rate is the n^3/3 flops of the factor over its time, and the ratio is to
        # the peak of the same dtype measured in this run.
        assert r["factor_gflops"] == pytest.approx(n**3 / 3 / 1e9 / r["factor_s"], rel=1e-12)
        assert r["factor_vs_peak"] == pytest.approx(
            r["factor_gflops"] / peaks[r["dtype"]]["gflops"], rel=1e-12)
        limit = solution_mod.residual_limit(r["dtype"], n)
        assert r["residual_limit"] == pytest.approx(limit)
        assert 0 < r["relative_residual"] < limit
        # the table row says the same numbers
        assert f"| numpy | cpu | {r['dtype']} | {n:,} | {r['gram_s']:.3f} |" in printed
    md = (out / "bench_solve.md").read_text()
    assert md.count("| numpy | cpu |") == 4 and "INACCURATE" not in md
    assert (out / "bench_solve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_residual_is_independent_of_the_library(tmp_path):
    # Oracle: the same seeded problem solved by NumPy's own LAPACK solve in float64;
    # the benchmark's row must report the kernelfit solve's residual at that level.
    cfg = bench.BenchConfig(sizes=[400], backends=["numpy"], dtypes=["float64"],
                            peak_size=128)
    doc = bench.run_bench(cfg, tmp_path, plot=False)
    X, Y = bench.synthetic_problem(400, cfg.d, cfg.seed)
    sq = (X**2).sum(1)
    K = np.exp(-bench.bench_gamma(cfg.d) * np.maximum(sq[:, None] + sq[None] - 2 * X @ X.T, 0))
    alpha = np.linalg.solve(K, Y)
    oracle = np.linalg.norm(K @ alpha - Y) / np.linalg.norm(Y)
    row = doc["rows"][0]
    assert row["relative_residual"] < 1e3 * max(oracle, 1e-16)
    assert row["norm"] == pytest.approx(np.sqrt(np.sum(alpha * (K @ alpha))), rel=1e-8)


def test_same_seed_same_bits_and_points_are_reused(tmp_path):
    a, b = bench.synthetic_problem(50, 7, 3), bench.synthetic_problem(50, 7, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], bench.synthetic_problem(50, 7, 4)[0])
    cfg = bench.BenchConfig(sizes=[300], backends=["numpy"], dtypes=["float32"], peak_size=128)
    first = bench.run_bench(cfg, tmp_path, plot=False)["rows"][0]
    again = bench.run_bench(cfg, tmp_path, plot=False)["rows"][0]
    fresh = bench.run_bench(cfg, tmp_path, plot=False, fresh=True)["rows"][0]
    assert first["reused"] is False and again["reused"] is True and fresh["reused"] is False
    assert again["factor_s"] == first["factor_s"]


def test_unavailable_backend_is_skipped_with_its_reason(tmp_path, monkeypatch, capsys):
    real = bench_device._find_spec
    monkeypatch.setattr(bench_device, "_find_spec",
                        lambda name: None if name == "cupy" else real(name))
    status, out = _run(tmp_path, "--n", "300", "--backend", "numpy", "cupy", "--dtype",
                       "float32", "--no-plot")
    assert status == 0
    doc = json.loads((out / "bench_solve.json").read_text())
    cupy = [r for r in doc["rows"] if r["backend"] == "cupy"]
    assert len(cupy) == 1 and cupy[0]["status"] == "skipped"
    assert "cupy is not installed" in cupy[0]["reason"]
    assert doc["devices"]["cupy"]["skipped"] == cupy[0]["reason"]
    assert [r["status"] for r in doc["rows"] if r["backend"] == "numpy"] == ["ok"]
    assert "skipped: cupy is not installed" in capsys.readouterr().out
    assert not (out / "bench_solve.png").exists()


def test_torch_without_cuda_is_skipped_not_an_error(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    cfg = bench.BenchConfig(sizes=[300], backends=["torch"], dtypes=["float32"], device="cuda",
                            peak_size=128)
    row = bench.run_bench(cfg, tmp_path, plot=False)["rows"][0]
    assert row["status"] == "skipped" and "no CUDA device" in row["reason"]


def test_planner_refusal_is_a_skipped_row(tmp_path, monkeypatch):
    real = bench.plan_fit
    monkeypatch.setattr(bench, "plan_fit", lambda *a, **k: real(*a, **k, extra_bytes=10**15))
    cfg = bench.BenchConfig(sizes=[300], backends=["numpy"], dtypes=["float64"], peak_size=128)
    row = bench.run_bench(cfg, tmp_path, plot=True)["rows"][0]
    assert row["status"] == "skipped" and row["reason"].startswith("planner: a cholesky fit")
    assert (tmp_path / "bench_solve.png").read_bytes()[:4] == b"\x89PNG"


def test_an_inaccurate_solve_is_flagged_not_praised(tmp_path, monkeypatch):
    # A residual limit no solve can meet: the row must say INACCURATE, the table warn.
    monkeypatch.setitem(solution_mod.RESIDUAL_LIMIT, "float32", 1e-30)
    cfg = bench.BenchConfig(sizes=[300], backends=["numpy"], dtypes=["float32"], peak_size=128)
    with pytest.warns(AccuracyWarning):
        doc = bench.run_bench(cfg, tmp_path, plot=False)
    row = doc["rows"][0]
    assert row["status"] == "INACCURATE" and row["converged"] is False and row["warnings"]
    assert "INACCURATE" in bench.markdown(doc) and "WARNING" in bench.markdown(doc)


@pytest.mark.parametrize("args, words", [
    (["--n", "1"], "--n / sizes must be an integer >= 2"),
    (["--n", "500", "--backend", "bogus"], "must be one of 'numpy', 'torch', 'cupy', got 'bogus'"),
    (["--n", "500", "--dtype", "float16"], "got 'float16'"),
    (["--n", "500", "--repeat", "0"], "--repeat / repeat"),
])
def test_bad_arguments_are_typed_errors_with_status_2(tmp_path, capsys, args, words):
    status, out = _run(tmp_path, *args)
    assert status == 2
    assert words in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(InputError):
        bench.BenchConfig(sizes=[1])


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "solve", "--help"])
    assert exit_.value.code == 0
    assert "kernelfit bench solve --n" in capsys.readouterr().out


def test_peak_is_the_better_of_before_and_after_and_a_low_one_is_called_out(tmp_path,
                                                                             monkeypatch):
    # A matmul "peak" far below what the factor reaches: the ratio must not pass as a share
    # of a true peak. Before/after: the better of the two is kept.
    rates = iter([0.002, 0.001])
    monkeypatch.setattr(bench, "matmul_peak",
                        lambda dev, dtype, size: {"gflops": next(rates), "size": 8,
                                                  "seconds": 1.0})
    cfg = bench.BenchConfig(sizes=[600], backends=["numpy"], dtypes=["float32"])
    doc = bench.run_bench(cfg, tmp_path, plot=False)
    peak = doc["peaks"]["numpy/cpu"]["float32"]
    assert peak["gflops"] == 0.002 and peak["measured_gflops"] == [0.002, 0.001]
    row = doc["rows"][0]
    assert row["peak_gflops"] == 0.002
    assert row["factor_vs_peak"] == pytest.approx(row["factor_gflops"] / 0.002)
    assert row["factor_vs_peak"] > 1 and "understates" in row["peak_note"]
    table = bench.markdown(doc)
    assert "%!" in table and "not a share of a true peak" in table

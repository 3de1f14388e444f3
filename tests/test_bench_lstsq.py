"""benchmarks/bench_lstsq.py at a tiny size: both solves agree with each other and with the
normal equations, and the QR road is the one taken for the study's full-rank features."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_lstsq.py"


def _run(out, *args):
    return subprocess.run([sys.executable, str(SCRIPT), "--dataset", "digits", "--out",
                           str(out), *args], capture_output=True, text=True, timeout=300)


def test_qr_and_the_svd_agree_on_the_study_features(tmp_path):
    done = _run(tmp_path, "--n", "400", "--N", "60", "300")
    assert done.returncode == 0, done.stderr
    (path,) = tmp_path.glob("bench_lstsq_digits_n400_*.json")
    doc = json.loads(path.read_text())
    assert [p["N"] for p in doc["points"]] == [60, 300]
    for p in doc["points"]:
        assert p["method"].startswith("Householder QR") and p["rank"] == p["rank_gelsd"]
        assert p["relative_difference"] < 1e-10
        assert p["backward_error_min_norm_lstsq"] < 1e-14 and p["backward_error_gelsd"] < 1e-14
        assert p["seconds_min_norm_lstsq"] > 0 and p["seconds_gelsd"] > 0
    assert "| 300 |" in path.with_suffix(".md").read_text()


def test_a_feature_count_at_or_above_n_is_refused(tmp_path):
    refused = _run(tmp_path, "--n", "400", "--N", "400")
    assert refused.returncode == 2 and "below --n" in refused.stderr
    assert not list(tmp_path.iterdir())

"""benchmarks/bench_precision.py at a tiny size: the refined fit solves the exact system, the
float32 one does not, and a rerun keeps what was written unless its settings differ."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_precision.py"


def _run(out, *extra):
    return subprocess.run([sys.executable, str(SCRIPT), "--dataset", "digits", "--n", "150",
                           "300", "--n-test", "200", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=300)


def test_precision_study_refines_to_the_exact_K_and_resumes(tmp_path):
    import numpy as np

    from kernelfit import KernelInterpolantClassifier, Options
    from kernelfit.data import load_split

    done = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    docs = [json.loads(p.read_text())
            for p in sorted(tmp_path.glob("precision_digits_nngp_depth1_n*.json"))]
    assert [d["n"] for d in docs] == [150, 300]
    for doc in docs:
        f32, exact = doc["variants"]["float32"], doc["variants"]["exact"]
        assert exact["residual_vs_exact_K_float64"] < 1e-9
        assert f32["residual_vs_exact_K_float64"] > 1e3 * exact["residual_vs_exact_K_float64"]
        assert 0 < f32["alpha_rel_diff_vs_exact"] < 1
    # The 300-point refined fit, against a float64 fit made here (an independent oracle).
    train, test = load_split("digits", n_train=300, n_test=200, seed=0)
    X = train.images.reshape(300, -1).astype(np.float64) / train.max_value
    oracle = KernelInterpolantClassifier(kernel="nngp", options=Options(dtype="float64"))
    oracle.fit(X, train.labels)
    Xte = test.images.reshape(len(test.images), -1).astype(np.float64) / test.max_value
    want = float(np.mean(oracle.predict(Xte) != test.labels))
    assert docs[1]["variants"]["exact"]["test_error"] == want
    assert abs(docs[1]["variants"]["exact"]["norm"] - oracle.norm_) < 1e-8 * oracle.norm_
    assert list(tmp_path.glob("precision_digits_nngp_depth1_*.png"))
    table = next(tmp_path.glob("precision_digits_nngp_depth1_*.md")).read_text()
    assert table.count("| exact |") == 2

    again = _run(tmp_path)
    assert again.returncode == 0 and again.stdout.count("kept") == 2
    other = _run(tmp_path, "--steps", "1")
    assert other.returncode != 0 and "other settings" in other.stderr

"""The GPU check script runs end to end on a CPU before it costs device time."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_device_checks_run_small_on_cpu(tmp_path):
    pytest.importorskip("torch")
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu/device_checks.py", "--out", str(tmp_path), "--small",
         "--only", "peaks", "in-place", "past-device-memory"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads((tmp_path / "device_checks.json").read_text())
    assert not [k for k in rec if k.endswith("-error")], rec
    assert rec["peak-float32"]["gflops"] > 0
    for key in ("in-place", "past-device-memory", "same-n-in-device-memory"):
        assert rec[key]["converged"] and rec[key]["relative_residual"] < 1e-3
    assert rec["past-device-memory"]["device_memory"] == int(2e7)

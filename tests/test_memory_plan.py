"""The Plan's byte count against the memory a fit really takes (FALKON's memory checker, ours).

A mid-size fit runs in a fresh process (after a small fit has loaded the
libraries), so that its peak resident memory (``VmHWM``) belongs to it
alone: the peak above what the process held before the fit, and the peak of
NumPy's traced allocations, must both stay within the Plan's ``total_bytes``
(the planner is an upper bound, or a run it admits could be killed), and
above the bytes of K itself (or the plan would count nothing).
"""

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, resource, sys, tracemalloc
import numpy as np, psutil


def vm_hwm():
    # the peak RSS of this process's own address space: ru_maxrss is not, on Linux it
    # keeps the forking parent's peak across exec (a pytest that has loaded torch)
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
from kernelfit import KernelInterpolantClassifier, Options

n, d, dtype, solver = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
rng = np.random.default_rng(0)
X = rng.standard_normal((n, d))
y = rng.integers(0, 10, n)
clf = KernelInterpolantClassifier(sigma=float(np.sqrt(d)), solver=solver,
                                  options=Options(dtype=dtype, n_jobs=1))
# a small fit first: the libraries a fit loads (LAPACK, BLAS threads) are the process's
KernelInterpolantClassifier(sigma=float(np.sqrt(d)), solver=solver, options=Options(
    dtype=dtype, n_jobs=1)).fit(X[:300], y[:300])
plan = clf._plan(n, d, 10)            # what fit will plan: counted before, compared after
before = psutil.Process().memory_info().rss
tracemalloc.start()
clf.fit(X, y)
traced = tracemalloc.get_traced_memory()[1]
peak = vm_hwm()
print(json.dumps({"before": before, "peak": peak, "traced": traced,
                  "total": clf.plan_.total_bytes,
                  "gram": clf.plan_.gram_bytes, "planned_before": plan.total_bytes}))
"""


@pytest.mark.parametrize("n, d, dtype, solver", [(6000, 64, "float64", "cholesky"),
                                                 (6000, 64, "float32", "cholesky"),
                                                 (5000, 64, "float32", "pcg")])
def test_peak_memory_of_a_fit_stays_within_its_plan(n, d, dtype, solver):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(n), str(d), dtype, solver],
                         capture_output=True, text=True, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    used = m["peak"] - m["before"]
    assert m["total"] == m["planned_before"]
    # the arrays (NumPy's allocations, traced) and the whole process (RSS, BLAS's own
    # workspace included) both within the plan
    assert m["gram"] <= m["traced"] <= m["total"], m
    assert m["gram"] <= used <= m["total"], (
        f"fit took {used / 2**20:.0f} MiB above its start; the plan counted "
        f"{m['total'] / 2**20:.0f} MiB (K alone {m['gram'] / 2**20:.0f} MiB)")

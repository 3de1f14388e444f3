"""Each front end's declared working memory (``FeatureMap.working_bytes``) against the peak
measured when it fits and transforms, and the run's plan counting it before any of it exists.

The measured peak is the most of (the fit's peak, the transform's peak less its returned
features), both traced from before the fit: the same quantity ``working_bytes`` declares.
NumPy's allocations are traced by ``tracemalloc``; PyTorch's are not, so kymatio's torch
backend is measured by a subprocess's anonymous resident memory, sampled while it runs.

Accepted: measured <= planned <= FACTOR x measured. The models count every large array
of the code paths (randconv's fit within 15%, Gabor's batch within 10%); kymatio's
intermediates are bounded per padded pixel and coefficient, 2x-2.4x of what was measured
(generous enough to cover glibc's retention of freed blocks in a real run's RSS). A plan
may be generous by that much, never short.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from kernelfit import Options
from kernelfit.cli import main
from kernelfit.errors import PlanError
from kernelfit.features import make_features
from kernelfit.features.randconv import RandomConvFeatures
from kernelfit.pipeline import run_plan
from kernelfit.pipeline.explain import explain
from kernelfit.pipeline.run import RunConfig, run

FACTOR = 4

CASES = [
    ("raw", 3000, (28, 28), {}),
    ("raw", 3000, (28, 28), {"whiten": True}),
    ("gabor", 100, (28, 28), {}),
    ("gabor", 70, (32, 32, 3), {"frequencies": (0.25, 0.125), "n_orientations": 4}),
    ("scattering", 300, (28, 28), {"backend": "numpy"}),
    ("scattering", 100, (32, 32, 3), {"backend": "numpy"}),
    ("randconv", 100, (28, 28), {"n_filters": 64, "n_fit_patches": 20000}),
    ("randconv", 60, (32, 32, 3), {"n_filters": 3000, "n_fit_patches": 5000}),
    ("randconv", 60, (16, 16, 3), {"n_filters": 40, "n_fit_patches": 8000,
                                    "filters_from": "patches"}),
    ("rff", 3000, (28, 28), {"n_features": 1500}),
    ("rff", 500, (32, 32, 3), {"n_features": 700, "sigma": 5.0}),
]


def _images(n, shape):
    return np.random.default_rng(0).random((n, *shape), dtype=np.float32)


def _measured(fmap, x) -> int:
    tracemalloc.start()
    try:
        fmap.fit(x)
        fit_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        out = fmap.transform(x)
        transform_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return max(fit_peak, transform_peak - out.nbytes)


@pytest.mark.parametrize("name, n, shape, params", CASES,
                         ids=[f"{c[0]}-{c[2]}-{'-'.join(map(str, c[3].values()))}"
                              for c in CASES])
def test_declared_working_memory_bounds_the_measured_peak(name, n, shape, params):
    x = _images(n, shape)
    # warm-up: imports, thread pools, kymatio's operator and FFT plans are not the map's
    make_features(name, **params).fit(x[:20]).transform(x[:3])
    fmap = make_features(name, **params)
    planned = fmap.working_bytes(n, shape)           # before the fit, from the shape only
    measured = _measured(fmap, x)
    assert measured <= planned <= FACTOR * measured, (planned, measured)
    assert fmap.working_bytes(n) == planned          # the fitted shape gives the same


_RSS_SCRIPT = """
import json, sys, threading, time
import numpy as np
from kernelfit.features import make_features


def anonymous_rss():
    # RssAnon, not VmRSS: pages of torch's shared libraries that memory pressure dropped
    # and the transform faulted back in are not the map's allocations
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


n, shape, params = json.loads(sys.argv[1])
x = np.random.default_rng(0).random((n, *shape), dtype=np.float32)
make_features("scattering", **params).fit(x[:20]).transform(x[:3])
fmap = make_features("scattering", **params)
planned = fmap.working_bytes(n, tuple(shape))
base, peak, done = anonymous_rss(), [0], threading.Event()


def poll():      # torch releases the GIL in its kernels: sampled every 0.2 ms
    while not done.is_set():
        peak[0] = max(peak[0], anonymous_rss())
        time.sleep(2e-4)


sampler = threading.Thread(target=poll)
sampler.start()
out = fmap.fit(x).transform(x)
done.set()
sampler.join()
print(json.dumps({"planned": planned, "measured": peak[0] - base - out.nbytes}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's RssAnon")
@pytest.mark.parametrize("n, shape", [(400, (28, 28))])
def test_scattering_torch_backend_working_memory_by_rss(n, shape):
    pytest.importorskip("torch")
    # glibc's dynamic mmap threshold keeps freed blocks in the heap, so the RSS would
    # measure the allocator's habits; a fixed threshold returns them as they are freed.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "2"}
    arg = json.dumps([n, shape, {"backend": "torch"}])
    done = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, arg], env=env, check=True,
                          capture_output=True, text=True, timeout=300)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["measured"] <= got["planned"] <= FACTOR * got["measured"], got


# -- the run's plan counts it, and refuses a front end that cannot fit before it allocates ---
def test_the_run_plan_counts_the_front_end_before_the_fit():
    fmap = make_features("randconv", n_filters=500, n_fit_patches=5000)
    n, m, shape = 300, 100, (8, 8)
    opts = Options(memory_limit=2**40, dtype="float64")
    plan = run_plan.plan_run(fmap, n, m, 10, solver="cholesky", options=opts,
                             streamed=False, image_shape=shape)
    features = (n + m) * fmap.dim_for(shape) * 4
    assert plan.extra_bytes >= features + fmap.working_bytes(n, shape)
    assert not fmap._fitted                       # planned from the shape alone
    info = explain(RunConfig(features="randconv", n_train=n, n_test=m,
                             feature_params={"n_filters": 500, "n_fit_patches": 5000}))
    assert info["front_end_bytes"] == fmap.working_bytes(n, shape)   # `kernelfit plan`


def test_a_huge_filter_count_is_refused_by_the_plan_before_allocating(monkeypatch, capsys):
    def no_fit(self, images):
        raise AssertionError("the filter bank was drawn before the plan refused it")

    monkeypatch.setattr(RandomConvFeatures, "_fit", no_fit)
    limit = 4 * 10**9
    config = RunConfig(features="randconv", feature_params={"n_filters": 10**8},
                       options=Options(memory_limit=limit))
    tracemalloc.start()
    try:
        with pytest.raises(PlanError) as err:
            run(config)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(err.value)
    assert peak < 2**26
    assert msg.startswith("the randconv front end with 100,000,000 filters needs about")
    assert "but only 4.0 GB is available" in msg
    fits = int(msg.split("fewer filters (about ")[1].split(" fit")[0].replace(",", ""))
    # `kernelfit plan` refuses it with the same words and numbers
    assert main(["plan", "--features", "randconv", "--filters", "100000000",
                 "--memory-limit", str(limit)]) == 2
    assert msg in capsys.readouterr().err
    # "what fits" is right: a little fewer filters plan (K and the solve take their
    # share besides: ~4% of the limit here),
    # a little more are refused for the front end's own bytes
    def plan(filters):
        return explain(RunConfig(features="randconv", options=Options(memory_limit=limit),
                                 feature_params={"n_filters": filters}))
    assert plan(int(fits * 0.95))["plan"]["limit_bytes"] == limit
    with pytest.raises(PlanError, match="front end with"):
        plan(int(fits * 1.02))

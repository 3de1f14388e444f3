"""Shared pieces of the benchmarks: the machine's GEMM peak, subprocess workers, data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np


def gemm_peak(n: int = 4096, dtype="float32", reps: int = 3) -> float:
    """Best-of-reps GFLOP/s of an n x n x n GEMM: the physical limit ratios refer to."""
    from kernelfit.engine.backend import get_backend
    return get_backend("numpy").matmul_gflops(dtype, n, reps)


def run_worker(script: str, args: list[str]) -> dict:
    """Run ``script --worker ...`` in a fresh process; its last stdout line is JSON.

    A fresh process per measurement gives each its own peak RSS (ru_maxrss)
    and keeps one library's allocations from inflating the other's.
    """
    out = subprocess.run([sys.executable, script, "--worker", *args], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def mnist_like(n_train: int, n_test: int, seed: int = 0):
    """Real MNIST from the kernelfit cache when it is there, else MNIST-like synthetic data.

    The synthetic set: ten smooth random 28x28 prototypes, each sample a
    prototype under random elastic-ish jitter and pixel noise, clipped to
    [0, 1] — sparse, correlated pixels like MNIST's, with learnable classes.
    """
    try:
        from kernelfit.data import load_split
        from kernelfit.data.cache import is_cached
        if is_cached("mnist"):
            train, test = load_split("mnist", n_train=n_train, n_test=n_test, seed=seed)
            scale = lambda ims: ims.reshape(len(ims), -1).astype(np.float32) / 255.0  # noqa: E731
            return scale(train.images), train.labels, scale(test.images), test.labels, "mnist"
    except ImportError:
        pass
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter, shift
    protos = np.stack([gaussian_filter(rng.random((28, 28)) ** 6, 1.5) for _ in range(10)])
    protos /= protos.max(axis=(1, 2), keepdims=True)

    def sample(m):
        y = rng.integers(0, 10, m)
        X = np.empty((m, 784), dtype=np.float32)
        for i in range(m):
            im = shift(protos[y[i]], rng.normal(0, 1.0, 2), order=1)
            im = im * rng.uniform(0.7, 1.3) + rng.normal(0, 0.15, (28, 28))
            X[i] = np.clip(im, 0, 1).ravel()
        return X, y

    Xtr, ytr = sample(n_train)
    Xte, yte = sample(n_test)
    return Xtr, ytr, Xte, yte, "mnist-like synthetic"

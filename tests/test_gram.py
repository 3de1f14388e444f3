
import numpy as np
import pytest
from sklearn.metrics.pairwise import rbf_kernel

from kernelfit.engine.gram.panels import build_gram, cross_gram_matvec
from kernelfit.engine.kernels import make_kernel
from kernelfit.options import Options


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("block", [1, 7, 64, 1000])
def test_build_gram_matches_sklearn(rng, n_jobs, block):
    X = rng.random((150, 6))
    K = build_gram(X, make_kernel("gaussian", gamma=0.4),
                   options=Options(dtype="float64", block_size=block, n_jobs=n_jobs))
    np.testing.assert_allclose(K, rbf_kernel(X, gamma=0.4), atol=1e-13)
    assert np.array_equal(K, K.T)  # exactly symmetric: each block computed once


def test_build_gram_float32_into_given_buffer(rng):
    X = rng.random((90, 5))
    out = np.empty((90, 90), dtype=np.float32)
    K = build_gram(X, make_kernel("gaussian", gamma=1.0), out=out,
                   options=Options(block_size=32))
    assert K is out
    np.testing.assert_allclose(K, rbf_kernel(X, gamma=1.0), atol=3e-6)
    np.testing.assert_array_equal(np.diag(K), 1.0)


def test_cross_gram_matvec(rng):
    A, B, V = rng.random((33, 5)), rng.random((47, 5)), rng.standard_normal((47, 3))
    k = make_kernel("gaussian", gamma=0.2)
    got = cross_gram_matvec(k, A, B, V, dtype="float64", block_size=10)
    np.testing.assert_allclose(got, rbf_kernel(A, B, gamma=0.2) @ V, atol=1e-12)

import numpy as np
import pytest

from kernelfit.errors import InputError
from kernelfit.gram_stream import build_gram_streamed
from kernelfit.kernels import make_kernel
from kernelfit.options import Options


def split(Phi, Phi_te, widths):
    j = 0
    for w in widths:
        yield Phi[:, j:j + w], Phi_te[:, j:j + w]
        j += w


def standardized(Phi, Phi_te):
    mu, sd = Phi.mean(0), Phi.std(0)
    sd[sd == 0] = 1
    return (Phi - mu) / sd, (Phi_te - mu) / sd


@pytest.mark.parametrize("kernel", ["linear", "gaussian"])
@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("widths", [[40], [7, 13, 20], [1] * 5 + [35]])
def test_streamed_equals_direct(kernel, standardize, widths):
    rng = np.random.default_rng(0)
    n, m = 37, 11
    Phi = rng.random((n, 40)) * 3
    Phi[:, 4] = 2.0                               # a constant column
    Phi_te = rng.random((m, 40)) * 3
    k = make_kernel(kernel, sigma=None if kernel == "linear" else 6.0)
    A, B = standardized(Phi, Phi_te) if standardize else (Phi, Phi_te)
    K_ref, Kt_ref = k.block(A, A), k.block(B, A, sq_y=None)
    if kernel == "gaussian":
        np.fill_diagonal(K_ref, 1.0)
    for opts in (Options(block_size=8, n_jobs=1), Options(block_size=16, n_jobs=2)):
        K, Kt = build_gram_streamed(split(Phi.astype(np.float32), Phi_te.astype(np.float32),
                                          widths), n, m, k, options=opts,
                                    standardize=standardize, dtype="float64")
        np.testing.assert_allclose(K, K_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(Kt, Kt_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(K, K.T)
    K32, _ = build_gram_streamed(split(Phi, Phi_te, widths), n, m, k,
                                 standardize=standardize)
    assert K32.dtype == np.float32
    np.testing.assert_allclose(K32, K_ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(np.diag(K32), np.diag(K_ref), rtol=1e-6)
    if kernel == "gaussian":
        assert (np.diag(K32) == 1).all()          # exact, not 1 - rounding


def test_features_stream_into_gram():
    from kernelfit.features import make_features
    x = np.random.default_rng(0).random((9, 8, 8), dtype=np.float32)
    xt = np.random.default_rng(1).random((4, 8, 8), dtype=np.float32)
    fmap = make_features("randconv", n_filters=5, patch_size=3, n_fit_patches=200).fit(x)
    k = make_kernel("gaussian", sigma=20.0)
    K, Kt = build_gram_streamed(fmap.iter_column_chunks(x, xt, 2), 9, 4, k, dtype="float64")
    A, B = standardized(fmap.transform(x).astype(np.float64),
                        fmap.transform(xt).astype(np.float64))
    np.testing.assert_allclose(K, k.block(A, A), atol=1e-5)
    np.testing.assert_allclose(Kt, k.block(B, A), atol=1e-5)


def test_errors():
    k = make_kernel("linear")
    with pytest.raises(InputError, match="chunk 0"):
        build_gram_streamed([(np.zeros((3, 2)), np.zeros((2, 2)))], 4, 2, k)
    with pytest.raises(InputError, match="no feature chunks"):
        build_gram_streamed([], 4, 2, k)

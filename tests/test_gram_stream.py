import numpy as np
import pytest

from kernelfit.engine.gram.stream import build_gram_streamed
from kernelfit.engine.kernels import make_kernel
from kernelfit.errors import InputError
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


def test_accumulate_keeps_inner_products_and_norms():
    from kernelfit.engine.gram.stream import accumulate_streamed, finish_streamed
    rng = np.random.default_rng(3)
    Phi, Phi_te = rng.standard_normal((23, 30)), rng.standard_normal((6, 30))
    acc = accumulate_streamed(split(Phi, Phi_te, [10, 20]), 23, 6, standardize=False,
                              dtype="float64")
    np.testing.assert_allclose(np.triu(acc.G), np.triu(Phi @ Phi.T), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(acc.sq, (Phi ** 2).sum(1), rtol=1e-12)
    np.testing.assert_allclose(acc.sq_test, (Phi_te ** 2).sum(1), rtol=1e-12)
    finish_streamed(acc, make_kernel("linear"), 8)     # linear: mirror and exact diagonal
    np.testing.assert_allclose(acc.G, Phi @ Phi.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(acc.G_test, Phi_te @ Phi.T, rtol=1e-12, atol=1e-12)


def _torch_devices():
    try:
        import torch
    except ImportError:
        return ["cpu"]                                 # the test itself skips
    return ["cpu"] + [pytest.param("cuda", marks=pytest.mark.gpu)] * torch.cuda.is_available()


@pytest.mark.parametrize("device", _torch_devices())
@pytest.mark.parametrize("kernel", ["linear", "gaussian"])
@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_chunks_equal_numpy(monkeypatch, device, kernel, standardize, dtype):
    """Tensor chunks accumulate on their device (torch CPU; CUDA when present) to NumPy's K."""
    torch = pytest.importorskip("torch")
    import kernelfit.engine.gram.stream as gs
    monkeypatch.setattr(gs, "DEVICE_STREAM_TILE", 8)         # several device tiles at this size
    rng = np.random.default_rng(1)
    n, m = 37, 11
    Phi = (rng.random((n, 40)) * 3).astype(np.float32)
    Phi[:, 4] = 2.0                                    # a constant column
    Phi_te = (rng.random((m, 40)) * 3).astype(np.float32)
    k = make_kernel(kernel, sigma=None if kernel == "linear" else 6.0)
    K_np, Kt_np = build_gram_streamed(split(Phi, Phi_te, [7, 13, 20]), n, m, k,
                                      standardize=standardize, dtype=dtype)
    tensors = ((torch.from_numpy(a).to(device), torch.from_numpy(b).to(device))
               for a, b in split(Phi, Phi_te, [7, 13, 20]))
    K, Kt = build_gram_streamed(tensors, n, m, k, standardize=standardize, dtype=dtype)
    assert isinstance(K, torch.Tensor) and K.dtype == getattr(torch, dtype)
    assert K.device.type == device and Kt.device.type == device
    K, Kt = K.cpu(), Kt.cpu()
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(K.numpy(), K_np, rtol=tol, atol=tol * np.abs(K_np).max())
    np.testing.assert_allclose(Kt.numpy(), Kt_np, rtol=tol, atol=tol * np.abs(K_np).max())
    assert torch.equal(K, K.T)
    if kernel == "gaussian":
        assert (K.diagonal() == 1).all()               # exact, not 1 - rounding
    else:                                              # the float64 norms, rounded once
        np.testing.assert_allclose(K.diagonal().numpy(), np.diag(K_np), rtol=1e-7)


def test_torch_standardize_equals_numpy():
    torch = pytest.importorskip("torch")
    from kernelfit.engine.gram.stream import standardize_chunk
    rng = np.random.default_rng(2)
    A, B = rng.random((50, 9)).astype(np.float32), rng.random((7, 9)).astype(np.float32)
    A[:, 2] = 1.5
    ref = standardize_chunk(A, B, np.float32)
    got = standardize_chunk(torch.from_numpy(A), torch.from_numpy(B), np.float32)
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(g.numpy(), r, rtol=1e-6, atol=1e-6)
    oracle = (A - A.mean(0)) / np.where(A.std(0) == 0, 1, A.std(0))
    np.testing.assert_allclose(ref[0], oracle, atol=1e-5)

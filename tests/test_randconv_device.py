"""The PyTorch path of the random conv net equals the NumPy path (CPU torch; CUDA when present)."""

import numpy as np
import pytest

from kernelfit.errors import InputError
from kernelfit.features import make_features

torch = pytest.importorskip("torch")

DEVICES = ["cpu"] + [pytest.param("cuda", marks=pytest.mark.gpu)] * torch.cuda.is_available()


def fitted(images, **kw):
    params = dict(n_filters=11, patch_size=4, n_fit_patches=500, block_filters=4, seed=3)
    return make_features("randconv", **{**params, **kw}).fit(images)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(36, 11, 10, 3), (30, 9, 9)])
def test_device_features_equal_numpy(device, shape):
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    x[0] = 0.5                                  # a flat image: contrast_eps keeps it finite
    fmap = fitted(x)
    ref = fmap.transform(x)
    # a small block_bytes forces several image blocks (and a ragged last one)
    got = fmap.transform_columns_device(torch.from_numpy(x).to(device), 0, fmap.n_filters,
                                        block_bytes=40_000)
    assert got.device.type == device and got.dtype == torch.float32
    np.testing.assert_allclose(got.cpu().numpy(), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("u0, u1", [(0, 3), (3, 11), (5, 6)])
def test_device_column_slices(u0, u1):
    x = np.random.default_rng(1).random((12, 8, 8, 3), dtype=np.float32)
    fmap = fitted(x)
    ref = fmap.transform(x)[:, 8 * u0:8 * u1]
    got = fmap.transform_columns_device(torch.from_numpy(x), u0, u1).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_device_errors():
    x = np.random.default_rng(2).random((5, 8, 8, 3), dtype=np.float32)
    fmap = make_features("randconv", n_filters=4, patch_size=3, n_fit_patches=100)
    with pytest.raises(InputError, match="fit"):
        fmap.transform_columns_device(torch.from_numpy(x), 0, 4)
    fmap.fit(x)
    with pytest.raises(InputError, match="torch tensor"):
        fmap.transform_columns_device(x, 0, 4)
    with pytest.raises(InputError, match="float32 tensor of shape"):
        fmap.transform_columns_device(torch.from_numpy(x[..., :2].copy()), 0, 4)
    with pytest.raises(InputError, match="float32 tensor of shape"):
        fmap.transform_columns_device(torch.from_numpy(x).double(), 0, 4)
    with pytest.raises(InputError, match="filter range"):
        fmap.transform_columns_device(torch.from_numpy(x), 2, 5)

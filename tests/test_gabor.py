import numpy as np
import pytest

from kernelfit.features import GaborBank, make_features

pytest.importorskip("skimage")


def grating(size, frequency, theta):
    y, x = np.mgrid[:size, :size].astype(np.float64)
    # the carrier direction of skimage's gabor_kernel: x cos(theta) + y sin(theta)
    phase = 2 * np.pi * frequency * (x * np.cos(theta) + y * np.sin(theta))
    return (0.5 + 0.5 * np.cos(phase)).astype(np.float32)


def central_energy(bank, image):
    maps = bank.responses(image[None])[0, 0]          # (n_filters, H, W)
    c = image.shape[0] // 4
    return maps[:, c:-c, c:-c].mean(axis=(1, 2)).reshape(len(bank.frequencies),
                                                         bank.n_orientations)


@pytest.mark.parametrize("s, o", [(0, 0), (1, 3), (2, 5), (3, 2), (0, 6)])
def test_grating_excites_matching_filter(s, o):
    bank = GaborBank()
    energy = central_energy(bank, grating(64, bank.frequencies[s], o * np.pi / 8))
    assert np.argmax(energy[s]) == o            # orientation tuning at the matching scale
    assert np.argmax(energy[:, o]) == s         # frequency response peaks at the matching scale
    assert np.unravel_index(np.argmax(energy), energy.shape) == (s, o)
    # unit envelope integral: gain 1 at the centre frequency, a cosine of amplitude
    # 1/2 excites one side band -> modulus ~ 1/4
    assert energy[s, o] == pytest.approx(0.25, rel=0.1)


def test_shape_order_and_lowpass():
    rng = np.random.default_rng(0)
    x = rng.random((3, 28, 28), dtype=np.float32)
    bank = make_features("gabor")
    F = bank.fit(x).transform(x)
    assert F.shape == (3, 33 * 49) == (3, bank.dim)
    assert F.dtype == np.float32
    # map 0 is the image averaged over the 4x4 cells of the 7x7 grid
    low = x.reshape(3, 7, 4, 7, 4).mean(axis=(2, 4)).reshape(3, -1)
    np.testing.assert_allclose(F[:, :49], low, rtol=1e-5, atol=1e-6)
    # batch size does not change the features
    F2 = GaborBank(batch_size=1).transform(x)
    np.testing.assert_allclose(F, F2, rtol=1e-5, atol=1e-6)


def test_rgb_and_params():
    x = np.random.default_rng(1).random((2, 20, 20, 3), dtype=np.float32)
    bank = GaborBank(frequencies=(0.25, 0.125), n_orientations=4, pool_grid=5)
    F = bank.transform(x)
    assert F.shape == (2, 3 * 9 * 25) == (2, bank.dim)
    assert bank.params["frequencies"] == [0.25, 0.125]
    assert bank.params["n_orientations"] == 4 and bank.params["pool_grid"] == 5

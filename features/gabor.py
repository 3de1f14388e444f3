"""A Gabor filter bank: complex modulus, pooled to a coarse grid (MNIST's "Gabor" row)."""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from kernelfit.errors import BackendError, InputError
from kernelfit.features.base import FeatureMap, channels_first, pool_matrix

# Centre frequencies in cycles per pixel: half-octave steps from a 4-pixel to an
# 11-pixel wavelength, the range of MNIST stroke widths and stroke spacings.
DEFAULT_FREQUENCIES = (0.25, 0.1768, 0.125, 0.0884)


class GaborBank(FeatureMap):
    """Modulus of a Gabor filter bank, average-pooled to a ``pool_grid`` x ``pool_grid`` grid.

    Each channel of each image is convolved (FFT, zero padding, "same" size)
    with the complex Gabor kernels of ``skimage.filters.gabor_kernel`` at every
    (frequency, orientation); the modulus of each response is averaged over a
    grid of near-equal cells. A low-pass channel (the image itself, averaged
    over the same cells) is prepended. Features are ordered
    ``(channel, map, grid_row, grid_col)`` with map 0 the low-pass channel and
    map ``1 + s * n_orientations + o`` the filter of frequency ``s`` and
    orientation ``o``; dim = C * (1 + S * O) * pool_grid^2 (1,617 for MNIST).

    Parameters
    ----------
    frequencies : sequence of float
        Centre frequencies in cycles/pixel (default: 0.25, 0.177, 0.125, 0.088,
        i.e. wavelengths 4, 5.7, 8, 11.3 pixels: half-octave steps).
    n_orientations : int
        Orientations theta = k pi / n_orientations, k = 0 .. n-1 (default 8).
        The kernel's carrier runs along x cos(theta) + y sin(theta) (x = column,
        y = row), as in scikit-image.
    bandwidth : float
        Spatial-frequency bandwidth in octaves (default 1): sets the Gaussian
        envelope, sigma = 0.56 / frequency for bandwidth 1. Each kernel has unit
        envelope integral, so every filter's gain at its own centre frequency is 1.
    n_stds : float
        Kernel support in envelope standard deviations (default 3).
    pool_grid : int
        Output cells per side (default 7: 4x4-pixel cells on 28x28 MNIST).
    lowpass : bool
        Include the pooled image as channel 0 (default True).
    seed : int
        Unused (the bank is fixed).
    n_jobs : int
        FFT worker threads (does not change the features).
    """

    name = "gabor"
    _param_names = ("frequencies", "n_orientations", "bandwidth", "n_stds", "pool_grid",
                    "lowpass")

    def __init__(self, *, frequencies=DEFAULT_FREQUENCIES, n_orientations: int = 8,
                 bandwidth: float = 1.0, n_stds: float = 3.0, pool_grid: int = 7,
                 lowpass: bool = True, seed: int = 0, batch_size: int = 64, n_jobs: int = 2):
        super().__init__(seed=seed, batch_size=batch_size)
        self.frequencies = tuple(float(f) for f in np.atleast_1d(frequencies))
        self.n_orientations = int(n_orientations)
        self.bandwidth = float(bandwidth)
        self.n_stds = float(n_stds)
        self.pool_grid = int(pool_grid)
        self.lowpass = bool(lowpass)
        self.n_jobs = int(n_jobs)
        if not self.frequencies or not all(0 < f <= 0.5 for f in self.frequencies):
            raise InputError(f"gabor frequencies must lie in (0, 0.5] cycles/pixel, "
                             f"got {self.frequencies}")
        if self.n_orientations < 1 or self.bandwidth <= 0 or self.n_stds <= 0:
            raise InputError("gabor n_orientations must be >= 1, bandwidth and n_stds > 0")
        self._plan = None

    @property
    def preprocessing(self) -> list[str]:
        return [f"gabor modulus ({len(self.frequencies)} frequencies x {self.n_orientations} "
                f"orientations, bandwidth {self.bandwidth} octave)",
                f"average pool {self.pool_grid}x{self.pool_grid}"]

    @property
    def n_filters(self) -> int:
        return len(self.frequencies) * self.n_orientations

    def kernels(self) -> list[np.ndarray]:
        """The complex kernels, in (frequency, orientation) order."""
        try:
            from skimage.filters import gabor_kernel
        except ImportError as exc:  # pragma: no cover - scikit-image is a declared extra
            raise BackendError("gabor features need scikit-image: install kernelfit[gabor]") \
                from exc
        return [gabor_kernel(f, theta=k * np.pi / self.n_orientations,
                             bandwidth=self.bandwidth, n_stds=self.n_stds)
                for f in self.frequencies for k in range(self.n_orientations)]

    def _dim_for_shape(self, shape) -> int:
        channels = 1 if len(shape) == 2 else shape[2]
        return channels * (self.n_filters + int(self.lowpass)) * self.pool_grid ** 2

    def _padded_shape(self, H: int, W: int, kers) -> tuple[int, int]:
        """The FFT frame of an H x W image under kernels ``kers``."""
        r = max(max(k.shape) for k in kers) // 2
        # Zero padding of r on each far side keeps the circular convolution from
        # wrapping the image around (outputs only read inputs within r pixels).
        # (and the padded frame must hold the whole kernel, for images smaller than it).
        return (sfft.next_fast_len(max(H + r, 2 * r + 1)),
                sfft.next_fast_len(max(W + r, 2 * r + 1)))

    def _memory(self, n: int, shape) -> tuple[int, int, int]:
        H, W = shape[0], shape[1]
        C = 1 if len(shape) == 2 else shape[2]
        K = self.n_filters
        Hp, Wp = self._padded_shape(H, W, self.kernels())
        b = min(n, self.batch_size)
        spectra = K * Hp * Wp * 8                         # complex64, kept per image shape
        # responses(): the padded FFT of a batch and its product with every spectrum
        # (complex64; the inverse FFT overwrites it), then the modulus and its float32
        # copy, and the channel-first and float32 copies of the batch (one frame and a
        # few images more than counted: within 2% of the measured peak otherwise)
        temps = b * C * ((K + 2) * Hp * Wp * 8 + (2 * K + 6) * H * W * 4)
        return 0, spectra, temps

    def _setup(self, H: int, W: int):
        """Kernel spectra at the padded size, and the pooling matrices (cached per shape)."""
        if self._plan is not None and self._plan[0] == (H, W):
            return self._plan[1:]
        kers = self.kernels()
        Hp, Wp = self._padded_shape(H, W, kers)
        spec = np.empty((len(kers), Hp, Wp), dtype=np.complex64)
        for i, k in enumerate(kers):
            buf = np.zeros((Hp, Wp), dtype=np.complex128)
            kh, kw = k.shape
            buf[:kh, :kw] = k
            # centre the kernel at (0, 0) so the output needs no crop offset
            buf = np.roll(buf, (-(kh // 2), -(kw // 2)), axis=(0, 1))
            spec[i] = sfft.fft2(buf)
        Ph, Pw = pool_matrix(H, self.pool_grid), pool_matrix(W, self.pool_grid)
        self._plan = ((H, W), spec, (Hp, Wp), Ph, Pw)
        return self._plan[1:]

    def responses(self, images: np.ndarray) -> np.ndarray:
        """Modulus maps before pooling: float32 ``(n, C, n_filters, H, W)``."""
        x = channels_first(images)
        n, C, H, W = x.shape
        spec, (Hp, Wp), _, _ = self._setup(H, W)
        X = sfft.fft2(x.astype(np.float32), s=(Hp, Wp), workers=self.n_jobs)
        Y = X[:, :, None] * spec[None, None]
        y = sfft.ifft2(Y, workers=self.n_jobs, overwrite_x=True)[..., :H, :W]
        return np.abs(y).astype(np.float32)

    def _transform_batch(self, images: np.ndarray) -> np.ndarray:
        x = channels_first(images)
        n, C, H, W = x.shape
        _, _, Ph, Pw = self._setup(H, W)
        maps = self.responses(images)                     # (n, C, K, H, W)
        if self.lowpass:
            maps = np.concatenate([x[:, :, None], maps], axis=2)
        pooled = np.einsum("gh,nckhw,pw->nckgp", Ph, maps, Pw, optimize=True)
        return pooled.reshape(n, -1).astype(np.float32, copy=False)

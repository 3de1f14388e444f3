"""Wavelet scattering coefficients (kymatio's Scattering2D): MNIST's "wavelet transform" row."""

from __future__ import annotations

import numpy as np

from kernelfit.errors import BackendError, InputError
from kernelfit.features.base import FeatureMap, channels_first
from kernelfit.features.kymatio_compat import import_scattering2d, torch_available


class ScatteringFeatures(FeatureMap):
    """Flattened 2-D scattering coefficients up to order ``max_order``.

    Each channel of each image gives ``K`` coefficient maps of size
    ``(H / 2^J) x (W / 2^J)``, with K = 1 + L J + L^2 J (J - 1) / 2 for
    ``max_order=2`` (81 maps of 7x7 for J = 2, L = 8 on 28x28 MNIST: dim 3,969).
    Features are ordered ``(channel, map, row, col)`` in kymatio's map order
    (order 0, then order 1 by (j, theta), then order 2).

    Parameters
    ----------
    J : int
        Number of scales; the maps are subsampled by 2^J (default 2).
    L : int
        Orientations per scale (default 8).
    max_order : {1, 2}
        Highest scattering order (default 2).
    backend : {"auto", "torch", "numpy"}
        kymatio frontend. "auto" takes torch when it imports (several times
        faster on CPU); the coefficients agree to float32 rounding. The
        resolved backend is recorded in ``params``.
    seed : int
        Unused (the wavelets are fixed).
    n_jobs : int
        torch threads while transforming (restored afterwards).
    """

    name = "scattering"
    _param_names = ("J", "L", "max_order", "backend")

    def __init__(self, *, J: int = 2, L: int = 8, max_order: int = 2, backend: str = "auto",
                 seed: int = 0, batch_size: int = 1000, n_jobs: int = 2):
        super().__init__(seed=seed, batch_size=batch_size)
        self.J, self.L, self.max_order = int(J), int(L), int(max_order)
        if backend not in ("auto", "torch", "numpy"):
            raise InputError(f"scattering backend must be 'auto', 'torch' or 'numpy', "
                             f"got {backend!r}")
        if backend == "auto":
            backend = "torch" if torch_available() else "numpy"
        elif backend == "torch" and not torch_available():
            raise BackendError("scattering backend 'torch' asked for, but torch does not "
                               "import; install torch or pass backend='numpy'")
        self.backend = backend
        if self.J < 1 or self.L < 1 or self.max_order not in (1, 2):
            raise InputError("scattering needs J >= 1, L >= 1 and max_order in (1, 2)")
        self.n_jobs = int(n_jobs)
        self._op = None

    @property
    def preprocessing(self) -> list[str]:
        return [f"scattering2d (J={self.J}, L={self.L}, order {self.max_order}, kymatio "
                f"{self.backend})", "flatten"]

    @property
    def n_maps(self) -> int:
        J, L = self.J, self.L
        k = 1 + L * J
        if self.max_order == 2:
            k += L * L * J * (J - 1) // 2
        return k

    def _dim_for_shape(self, shape) -> int:
        H, W = shape[0], shape[1]
        channels = 1 if len(shape) == 2 else shape[2]
        self._check_size(H, W)
        return channels * self.n_maps * (H >> self.J) * (W >> self.J)

    def _memory(self, n: int, shape) -> tuple[int, int, int]:
        H, W = shape[0], shape[1]
        C = 1 if len(shape) == 2 else shape[2]
        # kymatio pads each side to the next multiple of 2^J past one more 2^J
        # (kymatio.scattering2d.utils.compute_padding)
        step = 2 ** self.J
        Mp, Np = ((H + step) // step + 1) * step, ((W + step) // step + 1) * step
        b = min(n, self.batch_size)
        coefficients = self.n_maps * (H >> self.J) * (W >> self.J)
        # The wavelets at every resolution they are used at (generously: twice the
        # full-size bank). Per batch, kymatio holds the padded input's transform and a
        # first- and second-order path at once, and its coefficients before and after
        # the concatenation: 64 bytes a padded pixel and 24 a coefficient were 2.0x what
        # tracemalloc measured (numpy backend) and 2.4x the torch backend's anonymous
        # RSS, and above that RSS under glibc's default allocator, which keeps freed
        # blocks (1.2x: 28x28, J = 2).
        filters = 2 * (self.J * self.L + 1) * Mp * Np * 8
        return 0, filters, b * C * (64 * Mp * Np + 24 * coefficients)

    def _check_size(self, H: int, W: int) -> None:
        if H % (2 ** self.J) or W % (2 ** self.J):
            raise InputError(f"scattering with J={self.J} needs image sides divisible by "
                             f"{2 ** self.J}, got {H}x{W}; crop first")

    def __getstate__(self):
        # kymatio's operator holds filter tensors and does not pickle; it is rebuilt
        # on first use, so a saved model carries only the parameters.
        state = dict(self.__dict__)
        state["_op"] = None
        return state

    def _operator(self, H: int, W: int):
        if self._op is None or self._op[0] != (H, W):
            self._check_size(H, W)
            Scattering2D = import_scattering2d(self.backend)
            op = Scattering2D(J=self.J, shape=(H, W), L=self.L, max_order=self.max_order)
            self._op = ((H, W), op)
        return self._op[1]

    def _transform_batch(self, images: np.ndarray) -> np.ndarray:
        x = channels_first(images)
        n, C, H, W = x.shape
        op = self._operator(H, W)
        if self.backend == "torch":
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(max(1, self.n_jobs))
            try:
                with torch.no_grad():
                    out = op(torch.from_numpy(x)).numpy()
            finally:
                torch.set_num_threads(threads)
        else:
            out = op(x)
        return np.ascontiguousarray(out.reshape(n, -1), dtype=np.float32)

"""Random Fourier features of the Gaussian kernel (Rahimi & Recht, NeurIPS 2007).

For a Gaussian kernel k(x, y) = exp(-gamma ||x - y||^2) (kernelfit's
convention: gamma = 1 / (2 sigma^2), :func:`kernelfit.engine.kernels.make_kernel`),
Bochner's theorem writes k as the expectation of cos(w.x + b) cos(w.y + b)
times 2 over frequencies w ~ N(0, 2 gamma I) and phases b ~ U[0, 2 pi). N
draws give the feature map

    phi(x) = sqrt(2 / N) [cos(w_1.x + b_1), ..., cos(w_N.x + b_N)],

whose inner products phi(x).phi(y) tend to k(x, y) as N grows (error of order
1 / sqrt(N)). With ``--kernel linear`` the engine then fits the minimum-norm
interpolant of K = Phi Phi^T: the random-features model of Belkin, Hsu, Ma &
Mandal (PNAS 2019) past the interpolation threshold N = n.

Frequencies are drawn in fixed blocks of :data:`RFF_BLOCK` features, each from
its own generator seeded by (seed, block index): feature j is the same number
whatever N, the chunking or the rows asked for, so the features of N1 < N2
are a prefix of those of N2 (up to the common factor sqrt(2 / N)), and a
column chunk (:class:`~kernelfit.features.base.ColumnChunked`, what the
streamed Gram builder reads) needs no stored frequency matrix: the only fitted
state is the resolved gamma.
"""

from __future__ import annotations

import math

import numpy as np
from tqdm.auto import tqdm

from kernelfit.engine.kernels import check_scale, make_kernel
from kernelfit.errors import InputError
from kernelfit.features.base import ColumnChunked, FeatureMap
from kernelfit.params import real, whole

#: Features drawn per generator block (see the module docstring): a float32 (512, d)
#: frequency block is 1.6 MB for MNIST, 6.3 MB for CIFAR-10.
RFF_BLOCK = 512


class RandomFourierFeatures(ColumnChunked, FeatureMap):
    """sqrt(2 / N) cos(X W + b): N random Fourier features of a Gaussian kernel.

    Images (or any ``(n, ...)`` rows) are flattened first, so the kernel they
    approximate is the Gaussian kernel of the raw front end's rows.

    Parameters
    ----------
    n_features : int
        N, the number of features (default 1000).
    sigma, gamma : float, optional
        The Gaussian kernel's bandwidth or scale, as ``--sigma`` / ``--gamma``
        give them (gamma = 1 / (2 sigma^2)); at most one. Neither: fitted from
        the training rows by kernelfit's default rule 1 / (d Var X), the value
        ``--kernel gaussian`` resolves on the same rows.
    seed : int
        Frequencies and phases derive from it: the same seed gives the same bits.
    batch_size : int
        Rows per product (bounds the temporaries; does not change the features).
    """

    name = "rff"
    needs_fit = True
    any_shape = True
    unit_param = "n_features"
    #: The features are used as they are: standardizing each column would change
    #: the kernel that Phi Phi^T approximates.
    stream_standardize = False
    _param_names = ("n_features", "sigma", "gamma")

    def __init__(self, *, n_features: int = 1000, sigma: float | None = None,
                 gamma: float | None = None, seed: int = 0, batch_size: int = 2048):
        whole("rff n_features", n_features, 1)
        whole("rff batch_size", batch_size, 1)
        whole("rff seed", seed, 0)
        check_scale(gamma, sigma)
        real("rff sigma", sigma, 0, lo_open=True, allow_none=True,
             hint="None: the default scale 1 / (d Var X)")
        real("rff gamma", gamma, 0, lo_open=True, allow_none=True,
             hint="None: the default scale 1 / (d Var X)")
        super().__init__(seed=seed, batch_size=batch_size)
        self.n_features = int(n_features)
        self.sigma = None if sigma is None else float(sigma)
        self.gamma = None if gamma is None else float(gamma)

    @property
    def preprocessing(self) -> list[str]:
        return ["flatten", f"{self.n_features} random Fourier features of the Gaussian "
                           f"kernel (gamma={self._gamma_text()})"]

    def _gamma_text(self) -> str:
        if getattr(self, "gamma_", None) is not None:
            return f"{float(self.gamma_):.6g}"
        return "1 / (d Var X)" if self.gamma is None and self.sigma is None else \
            f"{make_kernel('gaussian', gamma=self.gamma, sigma=self.sigma).gamma:.6g}"

    @property
    def n_units(self) -> int:
        return self.n_features

    def _dim_for_shape(self, shape) -> int:
        return self.n_features

    def _memory(self, n: int, shape) -> tuple[int, int, int]:
        d = int(np.prod(shape))
        # fit: the default rule's np.var in float64 holds a float64 deviation array and
        # its square at once; a given scale reads nothing
        fit = 16 * n * d if self.gamma is None and self.sigma is None else 0
        # transform: one frequency block (float32) with its phases, and the product
        # block of one row batch (float32)
        b = min(RFF_BLOCK, self.n_features)
        temps = 4 * d * RFF_BLOCK + 12 * RFF_BLOCK + 4 * min(n, self.batch_size) * b
        return fit, 0, temps

    def _fitted_arrays(self):
        return [self.gamma_] if self._fitted else []

    def _state_spec(self, input_shape):
        return {"gamma_": ((), "float64")}

    # -- fitting ------------------------------------------------------------------------
    def _fit(self, images: np.ndarray) -> None:
        rows = images.reshape(len(images), -1)
        if rows.shape[1] < 1:
            raise InputError("rff features need rows of at least one value")
        # the one rule for the scale: what --kernel gaussian resolves on the same rows
        kernel = make_kernel("gaussian", gamma=self.gamma, sigma=self.sigma, X=rows)
        kernel.check_dtype("float32")
        self.gamma_ = np.array(kernel.gamma, dtype=np.float64)

    # -- transforming ---------------------------------------------------------------------
    def frequencies(self, block: int, d: int) -> tuple[np.ndarray, np.ndarray]:
        """Frequencies ``W`` (RFF_BLOCK, d) float32, one row per feature, and phases ``b``
        (RFF_BLOCK,) float32 of features ``[block * RFF_BLOCK, (block + 1) * RFF_BLOCK)``.

        Rows, so that the first k features' frequencies are a contiguous slice whose
        transpose BLAS reads in place (a column slice would be copied first).
        """
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(block)]))
        W = rng.standard_normal((RFF_BLOCK, d), dtype=np.float32)
        W *= np.float32(math.sqrt(2.0 * float(self.gamma_)))
        b = rng.uniform(0.0, 2.0 * math.pi, RFF_BLOCK).astype(np.float32)
        return W, b

    def transform(self, images, progress: bool = False) -> np.ndarray:
        images = self._check_input(images)
        return self._transform_units(images, 0, self.n_features, progress)

    def _transform_batch(self, images: np.ndarray) -> np.ndarray:
        return self._transform_units(images, 0, self.n_features, False)

    def _transform_units(self, images, u0: int, u1: int, progress: bool) -> np.ndarray:
        if not self._fitted:
            raise InputError("rff features resolve their scale from the training rows: call "
                             "fit(train_images) before transform")
        X = images.reshape(len(images), -1)
        n, d = X.shape
        out = np.empty((n, u1 - u0), dtype=np.float32)
        scale = np.float32(math.sqrt(2.0 / self.n_features))
        step = max(1, self.batch_size)
        blocks = range(u0 // RFF_BLOCK, -(-u1 // RFF_BLOCK))
        bar = tqdm(total=len(blocks), desc="rff features", unit="block",
                   disable=not progress, delay=2)
        for k in blocks:
            W, b = self.frequencies(k, d)
            j0, j1 = max(u0, k * RFF_BLOCK), min(u1, (k + 1) * RFF_BLOCK)
            rows = slice(j0 - k * RFF_BLOCK, j1 - k * RFF_BLOCK)
            for i in range(0, n, step):
                Z = X[i:i + step] @ W[rows].T
                Z += b[rows]
                np.cos(Z, out=Z)
                Z *= scale
                out[i:i + step, j0 - u0:j1 - u0] = Z
                del Z
            del W, b          # the next block's draw would otherwise sit beside this one
            bar.update()
        bar.close()
        return out

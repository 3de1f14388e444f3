"""Coates & Ng's single-layer network with random filters (the paper's CIFAR-10 front end).

Per image: every p x p patch (stride 1) is brightness/contrast normalized,
ZCA-whitened, and correlated with F random unit-norm filters; each response z
gives two rectified features, max(0, z - b) and max(0, -z - b), summed over the
four quadrants of the response map: 8 F features.

Speed: normalization, whitening and the filters fold into one affine map of
the normalized patch, z - b = [x_n, 1] @ A_aug (A = W P, last row b - A m),
so the work is one GEMM per (image block, filter block) followed by two
element-wise passes and the pooling sums. Image blocks run on ``n_jobs``
threads with single-threaded BLAS, so the element-wise passes use every core
too; filter blocks are sized to keep the response block in cache.

Device path (:meth:`RandomConvFeatures.transform_columns_device`): the same
algorithm on PyTorch tensors (CPU or CUDA) for images already on the device,
so a GPU computes a filter chunk of 60,000 images without a host round trip;
the streamed Gram builder then consumes the chunk where it lies.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from kernelfit.errors import InputError
from kernelfit.features.base import ColumnChunked, FeatureMap

FILTER_SOURCES = ("gaussian", "patches")


class RandomConvFeatures(ColumnChunked, FeatureMap):
    """Random-filter convolution, two-sided rectification, quadrant sum pooling.

    Feature order: column ``8 f + 4 s + q`` holds filter ``f``, sign ``s``
    (0: max(0, z - b), 1: max(0, -z - b)) and quadrant ``q`` (0 top-left,
    1 top-right, 2 bottom-left, 3 bottom-right; the response map of side
    ``r = H - p + 1`` splits at ``ceil(r / 2)``). The columns of filters
    ``[f0, f1)`` are therefore the contiguous slice ``[8 f0, 8 f1)``, which is
    what :meth:`transform_columns` returns.

    Parameters
    ----------
    n_filters : int
        F (default 1600, Coates & Ng's largest dictionary; the paper uses 32,000).
    patch_size : int
        p (default 6).
    zca_eps : float
        ZCA regularizer added to the covariance eigenvalues (default 0.1, Coates
        & Ng's value; it applies to normalized patches, whose variance is ~1 per
        pixel, so it damps directions below ~10% of the typical variance).
    contrast_eps : float
        Added to each patch's variance before dividing by its square root
        (default 10 / 255^2: Coates & Ng's 10 on the 0-255 scale, for [0, 1]
        pixels); keeps flat patches from blowing up noise.
    b : float
        Rectification threshold (default 0.25, the soft-threshold alpha Coates &
        Ng found best for random and whitened-patch dictionaries). With
        unit-norm filters on whitened patches z has roughly unit variance, so
        about 80% of responses pass each side and the code stays dense but
        nonlinear.
    filters_from : {"gaussian", "patches"}
        Filters drawn i.i.d. Gaussian in the whitened space, or random whitened
        training patches; normalized to unit norm either way.
    n_fit_patches : int
        Random training patches used to fit the normalization mean and ZCA (default 100,000).
    seed : int
        Patch sample and filters both derive from it: the same seed gives the same bits.
    n_jobs : int
        Threads (does not change the features).
    """

    name = "randconv"
    needs_fit = True
    unit_param = "n_filters"
    _param_names = ("n_filters", "patch_size", "zca_eps", "contrast_eps", "b", "filters_from",
                    "n_fit_patches")

    def __init__(self, *, n_filters: int = 1600, patch_size: int = 6, zca_eps: float = 0.1,
                 contrast_eps: float = 10.0 / 255**2, b: float = 0.25,
                 filters_from: str = "gaussian", n_fit_patches: int = 100_000, seed: int = 0,
                 n_jobs: int = 2, block_images: int = 1, block_filters: int = 512):
        super().__init__(seed=seed)
        self.n_filters, self.patch_size = int(n_filters), int(patch_size)
        self.zca_eps, self.contrast_eps, self.b = float(zca_eps), float(contrast_eps), float(b)
        self.filters_from, self.n_fit_patches = filters_from, int(n_fit_patches)
        self.n_jobs, self.block_images = int(n_jobs), int(block_images)
        self.block_filters = int(block_filters)
        if filters_from not in FILTER_SOURCES:
            raise InputError(f"filters_from must be one of {', '.join(FILTER_SOURCES)}, "
                             f"got {filters_from!r}")
        if self.n_filters < 1 or self.patch_size < 1 or self.n_fit_patches < 2:
            raise InputError("randconv needs n_filters >= 1, patch_size >= 1, n_fit_patches >= 2")
        if self.zca_eps < 0 or self.contrast_eps < 0 or self.b < 0:
            raise InputError("randconv zca_eps, contrast_eps and b must be >= 0")

    @property
    def preprocessing(self) -> list[str]:
        p = self.patch_size
        return [f"{p}x{p} patches, per-patch brightness/contrast normalization",
                f"ZCA whitening (eps={self.zca_eps})",
                f"{self.n_filters} random {self.filters_from} unit-norm filters",
                f"two-sided rectification (b={self.b})", "quadrant sum pooling"]

    @property
    def n_units(self) -> int:
        return self.n_filters

    @property
    def features_per_unit(self) -> int:
        return 8

    def _dim_for_shape(self, shape) -> int:
        return 8 * self.n_filters

    def _memory(self, n: int, shape) -> tuple[int, int, int]:
        H, W = shape[0], shape[1]
        C = 1 if len(shape) == 2 else shape[2]
        p, F, count = self.patch_size, self.n_filters, self.n_fit_patches
        d = C * p * p
        # fit: the float32 patch sample (with its int64 indices) and its float64 copy;
        # then, beside that copy, the filter bank as drawn (float64), its norms' square,
        # its float32 copy, A = W ZCA (float64), A_aug stacked in float64 and in float32
        sample = count * (12 * d + 24 + 16 * p)
        bank = count * d * 8 + F * (36 * d + 64) + 4 * d * d * 8
        state = F * d * 4 + (d + 1) * F * 4 + d * d * 8 + d * 8    # filters_, A_aug_, zca_
        # transform, per worker thread: the patch matrix of an image block, its response
        # block (and a contiguous copy of a partial one), quadrant sums
        nb = max(1, min(self.block_images, n))
        ho, wo = H - p + 1, W - p + 1
        f = min(self.block_filters, F)
        worker = (4 * nb * ho * wo * (d + 4 + 3 * f) + 8 * (d + 1) * f + 8 * nb * wo * f
                  + 64 * nb * f)
        workers = max(1, min(self.n_jobs, -(-n // nb)))
        return max(sample, bank), state, workers * worker

    def _fitted_arrays(self):
        return [self.A_aug_] if self._fitted else []

    def _state_spec(self, input_shape):
        if len(input_shape) not in (2, 3):
            raise InputError(f"randconv features take images (H, W) or (H, W, C), not "
                             f"shape {tuple(input_shape)}")
        channels = 1 if len(input_shape) == 2 else input_shape[2]
        d, f = channels * self.patch_size ** 2, self.n_filters
        # what _fit sets: the patch mean and ZCA (float64), the filters and the folded map
        return {"mean_": ((d,), "float64"), "zca_": ((d, d), "float64"),
                "filters_": ((f, d), "float32"), "A_aug_": ((d + 1, f), "float32")}

    # -- fitting ------------------------------------------------------------------------
    def _normalize(self, P: np.ndarray) -> np.ndarray:
        """Brightness/contrast normalize patch rows in place (float32)."""
        d = P.shape[1]
        # row means as a GEMV: NumPy's axis-1 mean over short rows is ~4x slower
        P -= (P @ np.full(d, 1.0 / d, dtype=P.dtype))[:, None]
        var = np.einsum("ij,ij->i", P, P) / d
        P *= (1.0 / np.sqrt(var + self.contrast_eps)).astype(P.dtype)[:, None]
        return P

    def _sample_patches(self, x: np.ndarray, rng, count: int) -> np.ndarray:
        n, H, W, C = x.shape
        p = self.patch_size
        i = rng.integers(0, n, count)
        r = rng.integers(0, H - p + 1, count)
        c = rng.integers(0, W - p + 1, count)
        off = np.arange(p)
        P = x[i[:, None, None], r[:, None, None] + off[None, :, None],
              c[:, None, None] + off[None, None, :]]              # (count, p, p, C)
        return self._normalize(np.ascontiguousarray(P.reshape(count, -1), dtype=np.float32))

    def _fit(self, images: np.ndarray) -> None:
        x = _nhwc(images)
        if min(x.shape[1], x.shape[2]) < self.patch_size:
            raise InputError(f"images {x.shape[1:3]} are smaller than the {self.patch_size}-pixel "
                             "patches")
        patch_rng, filter_rng = (np.random.default_rng(s)
                                 for s in np.random.SeedSequence(self.seed).spawn(2))
        P = self._sample_patches(x, patch_rng, self.n_fit_patches).astype(np.float64)
        self.mean_ = P.mean(axis=0)
        P -= self.mean_
        cov = P.T @ P / len(P)
        evals, evecs = np.linalg.eigh(cov)
        evals = np.maximum(evals, 0.0)
        self.zca_ = (evecs / np.sqrt(evals + self.zca_eps)) @ evecs.T   # symmetric P
        d = P.shape[1]
        if self.filters_from == "gaussian":
            Wf = filter_rng.standard_normal((self.n_filters, d))
        else:
            pick = filter_rng.integers(0, len(P), self.n_filters)
            Wf = P[pick] @ self.zca_           # whitened training patches (zca_ is symmetric)
        Wf /= np.maximum(np.linalg.norm(Wf, axis=1, keepdims=True), 1e-12)
        self.filters_ = Wf.astype(np.float32)
        A = Wf @ self.zca_                                          # (F, d)
        # the threshold rides along as the weight of a constant-1 column
        self.A_aug_ = np.ascontiguousarray(
            np.vstack([A.T, (-self.b - A @ self.mean_)[None, :]]), dtype=np.float32)

    # -- transforming ---------------------------------------------------------------------
    def transform(self, images, progress: bool = False) -> np.ndarray:
        images = self._check_input(images)
        return self._transform_units(images, 0, self.n_filters, progress)

    def _patches(self, xb: np.ndarray) -> np.ndarray:
        """Normalized patch rows (order: row, column, channel) of an image block, plus a
        trailing column of ones."""
        p = self.patch_size
        win = sliding_window_view(xb, (p, p), axis=(1, 2))        # (nb, ho, wo, C, p, p)
        nb, ho, wo, C = win.shape[:4]
        d = C * p * p
        X = np.empty((nb * ho * wo, d + 1), dtype=np.float32)
        # Only the leading, strided axis is split, so this reshape is always a view
        # (setting .shape, which refused to copy, is deprecated since NumPy 2.5).
        dst = X[:, :d].reshape(nb, ho, wo, p, p, C)
        if not np.may_share_memory(dst, X):  # a copy would leave X unfilled
            raise RuntimeError("internal error: patch matrix reshape copied")
        # (p, p, C) order keeps the channel axis innermost on both sides: a 2x faster copy
        np.copyto(dst, win.transpose(0, 1, 2, 4, 5, 3))
        self._normalize(X[:, :d])
        X[:, d] = 1.0
        return X

    def _block(self, xb: np.ndarray, u0: int, u1: int, out: np.ndarray) -> None:
        """Features of filters [u0, u1) for one image block, written into ``out`` (nb, 8(u1-u0))."""
        X = self._patches(xb)
        nb = len(xb)
        ho = xb.shape[1] - self.patch_size + 1
        wo = xb.shape[2] - self.patch_size + 1
        hs, ws = (ho + 1) // 2, (wo + 1) // 2
        counts = np.array([hs * ws, hs * (wo - ws), (ho - hs) * ws, (ho - hs) * (wo - ws)],
                          dtype=np.float32)
        # quadrant sums of the patch rows: sum(z - b) over a quadrant is then a tiny GEMM
        XQ = np.ascontiguousarray(_quadrant_sums(X, nb, ho, wo, hs, ws).transpose(0, 2, 1))
        out4 = out.reshape(nb, u1 - u0, 2, 4)
        step = self.block_filters
        Z = np.empty((len(X), min(step, u1 - u0)), dtype=np.float32)
        b2 = -2.0 * self.b
        for f0 in range(u0, u1, step):
            f1 = min(f0 + step, u1)
            A = self.A_aug_[:, f0:f1]
            z = Z[:, :f1 - f0]
            np.matmul(X, A, out=z)                                    # z - b
            lin = np.matmul(XQ, A).transpose(0, 2, 1)                 # sum(z - b): (nb, f, 4)
            # max(0, z - b) = (z - b) - min(z - b, 0); in place, so one buffer stays in cache
            _clamp_max(z, 0.0)
            out4[:, f0 - u0:f1 - u0, 0, :] = lin - _quadrant_sums(z, nb, ho, wo, hs, ws)
            # min(min(z - b, 0), -2b) = -2b - max(0, -z - b): no second GEMM
            _clamp_max(z, b2)
            s = _quadrant_sums(z, nb, ho, wo, hs, ws)
            s += (2.0 * self.b) * counts
            np.negative(s, out=s)
            out4[:, f0 - u0:f1 - u0, 1, :] = s

    def _transform_units(self, images, u0: int, u1: int, progress: bool) -> np.ndarray:
        x = _nhwc(images)
        n = len(x)
        out = np.empty((n, 8 * (u1 - u0)), dtype=np.float32)
        step = max(1, self.block_images)
        blocks = [(i, min(i + step, n)) for i in range(0, n, step)]
        bar = tqdm(total=n, desc="randconv features", unit="img", disable=not progress)

        def work(i0, i1):
            self._block(x[i0:i1], u0, u1, out[i0:i1])
            return i1 - i0

        n_jobs = max(1, min(self.n_jobs, len(blocks)))
        # one BLAS (and torch) thread per worker: the element-wise passes then also
        # run on every core, and the workers do not oversubscribe them
        # torch only clamps cache-sized blocks: its own thread pool would cost more in
        # wake-ups (milliseconds per call, measured) than it could save
        with threadpool_limits(limits=1 if n_jobs > 1 else None, user_api="blas"), \
                _torch_threads(1):
            if n_jobs == 1:
                for i0, i1 in blocks:
                    bar.update(work(i0, i1))
            else:
                with ThreadPoolExecutor(n_jobs) as pool:
                    for done in pool.map(lambda b: work(*b), blocks):
                        bar.update(done)
        bar.close()
        return out

    # -- device path (PyTorch) ------------------------------------------------------------
    def transform_columns_device(self, images, u0: int, u1: int, *,
                                 block_bytes: int = 2**30):
        """Features of filters ``[u0, u1)`` of images that are a torch tensor (CPU or CUDA).

        The same numbers as ``transform(images)[:, 8 u0:8 u1]`` up to float32
        rounding (same patch normalization, affine map, rectification, pooling
        and column order), computed where ``images`` lie: a float32 tensor
        ``(n, 8 (u1 - u0))`` on that device.

        Parameters
        ----------
        images : torch.Tensor (n, H, W) or (n, H, W, C), float32 in [0, 1]
            The shape ``fit`` saw.
        u0, u1 : int
            Filter range, ``0 <= u0 < u1 <= n_filters``.
        block_bytes : int
            Bound on the patch matrix plus the response block of one image block
            (the only temporaries; default 1 GiB).
        """
        torch = _torch()
        if torch is None or not isinstance(images, torch.Tensor):
            raise InputError("transform_columns_device takes a torch tensor of images; use "
                             "transform / transform_columns for NumPy arrays")
        if not self._fitted:
            raise InputError("randconv features learn from data: call fit(train_images) "
                             "before transform_columns_device")
        x = images[..., None] if images.ndim == 3 else images
        want = tuple(self.input_shape_) if len(self.input_shape_) == 3 \
            else (*self.input_shape_, 1)
        if images.dtype != torch.float32 or tuple(x.shape[1:]) != want or len(x) == 0:
            raise InputError(f"images must be a non-empty float32 tensor of shape (n, "
                             f"{', '.join(map(str, self.input_shape_))}) as in fit; got "
                             f"{images.dtype} {tuple(images.shape)}")
        u0, u1 = int(u0), int(u1)
        if not 0 <= u0 < u1 <= self.n_filters:
            raise InputError(f"filter range [{u0}, {u1}) must lie in [0, {self.n_filters})")
        n, H, W, C = x.shape
        p = self.patch_size
        L = (H - p + 1) * (W - p + 1)
        fb = min(self.block_filters, u1 - u0)
        nb = max(1, int(block_bytes) // (4 * L * (C * p * p + 1 + fb)))
        A = self._device_filters(x.device)
        out = torch.empty((n, 8 * (u1 - u0)), dtype=torch.float32, device=x.device)
        for i0 in range(0, n, nb):
            self._block_device(x[i0:i0 + nb], A, u0, u1, out[i0:i0 + nb])
        return out

    def _device_filters(self, device):
        """A_aug_ on ``device`` (cached: one copy per device and fit)."""
        torch = _torch()
        cached = getattr(self, "_device_A", None)
        if cached is not None and cached[0] == device and cached[1] is self.A_aug_:
            return cached[2]
        A = torch.from_numpy(self.A_aug_).to(device)
        self._device_A = (device, self.A_aug_, A)
        return A

    def _block_device(self, xb, A, u0: int, u1: int, out) -> None:
        """:meth:`_block` on a torch image block (nb, H, W, C): the same algebra, step by step."""
        torch = _torch()
        nb, H, W, C = xb.shape
        p = self.patch_size
        ho, wo = H - p + 1, W - p + 1
        hs, ws = (ho + 1) // 2, (wo + 1) // 2
        d = C * p * p
        # patch rows in the host path's (row, column, channel) order, copied from a
        # strided window view (im2col on channels-last input is ~10x slower on a CPU)
        win = xb.unfold(1, p, 1).unfold(2, p, 1)                      # (nb, ho, wo, C, p, p)
        X = torch.empty((nb * ho * wo, d + 1), dtype=torch.float32, device=xb.device)
        X[:, :d].view(nb, ho, wo, p, p, C).copy_(win.permute(0, 1, 2, 4, 5, 3))
        P = X[:, :d]
        # brightness/contrast normalization, as _normalize does on the host
        P -= P.mean(dim=1, keepdim=True)
        var = torch.linalg.vecdot(P, P) / d
        P *= torch.rsqrt(var + self.contrast_eps)[:, None]
        X[:, d] = 1.0
        counts = torch.tensor([hs * ws, hs * (wo - ws), (ho - hs) * ws, (ho - hs) * (wo - ws)],
                              dtype=torch.float32, device=xb.device)
        XQ = _quadrant_sums_device(X, nb, ho, wo, hs, ws).transpose(1, 2)   # (nb, 4, d + 1)
        out4 = out.view(nb, u1 - u0, 2, 4)
        step = self.block_filters
        Z = torch.empty((len(X), min(step, u1 - u0)), dtype=torch.float32, device=xb.device)
        for f0 in range(u0, u1, step):
            f1 = min(f0 + step, u1)
            Af = A[:, f0:f1]
            z = Z[:, :f1 - f0]
            torch.matmul(X, Af, out=z)                                   # z - b
            lin = torch.matmul(XQ, Af).transpose(1, 2)                   # sum(z - b): (nb, f, 4)
            z.clamp_(max=0.0)                       # max(0, z - b) = (z - b) - min(z - b, 0)
            out4[:, f0 - u0:f1 - u0, 0, :] = lin - _quadrant_sums_device(z, nb, ho, wo, hs, ws)
            z.clamp_(max=-2.0 * self.b)             # min(z - b, -2b) = -2b - max(0, -z - b)
            s = _quadrant_sums_device(z, nb, ho, wo, hs, ws)
            s += (2.0 * self.b) * counts
            out4[:, f0 - u0:f1 - u0, 1, :] = s.neg_()


def _quadrant_sums_device(z, nb: int, ho: int, wo: int, hs: int, ws: int):
    """:func:`_quadrant_sums` for a torch response block (nb * ho * wo, f): (nb, f, 4)."""
    torch = _torch()
    z4 = z.view(nb, ho, wo, z.shape[1])
    top, bottom = z4[:, :hs].sum(dim=1), z4[:, hs:].sum(dim=1)      # (nb, wo, f)
    return torch.stack([top[:, :ws].sum(dim=1), top[:, ws:].sum(dim=1),
                        bottom[:, :ws].sum(dim=1), bottom[:, ws:].sum(dim=1)], dim=2)


def _quadrant_sums(z: np.ndarray, nb: int, ho: int, wo: int, hs: int, ws: int) -> np.ndarray:
    """Sums of a response block (nb * ho * wo, f) over the four quadrants: (nb, f, 4)."""
    f = z.shape[1]
    rows = z.reshape(nb, ho, wo * f)
    # rows first, as a (batched) GEMV with a ones vector: BLAS streams the block at
    # memory speed, ~1.5x NumPy's axis-1 sum
    ones = np.ones((1, max(hs, ho - hs)), dtype=z.dtype)
    top = np.matmul(ones[:, :hs], rows[:, :hs]).reshape(nb, wo, f)
    bottom = np.matmul(ones[:, :ho - hs], rows[:, hs:]).reshape(nb, wo, f)
    return np.stack([top[:, :ws].sum(axis=1), top[:, ws:].sum(axis=1),
                     bottom[:, :ws].sum(axis=1), bottom[:, ws:].sum(axis=1)], axis=2)


def _clamp_max(z: np.ndarray, value: float) -> None:
    """z = min(z, value) in place (torch's kernel is ~4x NumPy's NaN-aware minimum)."""
    torch = _torch()
    if torch is not None:
        torch.from_numpy(z).clamp_max_(value)
    else:
        np.minimum(z, np.float32(value), out=z)


@functools.cache
def _torch():
    """torch if it imports (optional: only its in-place clamp is used), else None."""
    try:
        import torch
    except ImportError:  # pragma: no cover - exercised where torch is absent
        return None
    return torch


@contextmanager
def _torch_threads(n):
    torch = _torch()
    if torch is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _nhwc(images: np.ndarray) -> np.ndarray:
    return images[..., None] if images.ndim == 3 else images

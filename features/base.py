"""The feature-map contract every image front end follows, and the steps they share.

A feature map turns float32 images scaled to [0, 1], shaped ``(n, H, W)``
(gray) or ``(n, H, W, 3)`` (RGB), into float32 rows ``(n, dim)``. It follows
scikit-learn's estimator habits: ``__init__`` stores parameters, ``fit``
learns what is learned from data (nothing, for fixed filter banks) and returns
``self``, ``transform`` works in row chunks so memory stays bounded.

Column streaming is a declared capability (:class:`ColumnChunked`,
``streamable = True``): such a map is a list of *units* (filters, for the
random convolution network), each giving ``features_per_unit`` contiguous
columns, and ``transform_columns(images, c, chunk_filters)`` computes the
columns of units ``[c * chunk_filters, (c + 1) * chunk_filters)`` only, so the
streamed Gram builder never needs the whole ``n x dim`` matrix. A map whose
features do not split cheaply is not streamable: asking to stream it is an
error, never a full transform per chunk.
"""

from __future__ import annotations

import hashlib

import numpy as np
from tqdm.auto import tqdm

from kernelfit.errors import InputError
from kernelfit.formats import jsonable

# Rows per transform chunk when a map does not choose its own.
DEFAULT_BATCH = 1024
# Added to every map's working memory: Python objects, progress bars, index arrays and
# other allocations too small to model (a few kB measured; 1 MB is ample).
WORKING_OVERHEAD = 2**20


def as_images(images, *, name: str = "images", any_shape: bool = False) -> np.ndarray:
    """Check and return images as C-contiguous float32 ``(n, H, W)`` or ``(n, H, W, 3)``.

    Integer input is refused rather than silently scaled: the caller knows
    the data set's ``max_value``, the feature map does not. ``any_shape``
    accepts any ``(n, ...)`` array, e.g. ``(n, d)`` vectors of user data, for
    maps that only flatten.
    """
    arr = np.asarray(images)
    if arr.dtype.kind in "iub":
        raise InputError(f"{name} must be floats scaled to [0, 1], got {arr.dtype}; "
                         "convert with images.astype(np.float32) / max_value")
    if arr.dtype.kind != "f":
        raise InputError(f"{name} must be a float array, got {arr.dtype}")
    if any_shape and arr.ndim >= 2 and arr.shape[0] > 0:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise InputError(f"{name} contain NaN or infinite values")
        return arr
    check_image_shape(arr.shape[1:], name=name)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.shape[0] == 0 or arr.shape[1] < 2 or arr.shape[2] < 2:
        raise InputError(f"{name} must hold at least one image of at least 2x2, got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contain NaN or infinite values")
    return arr


def check_image_shape(shape, *, name: str = "images") -> None:
    """Refuse an image shape other than ``(H, W)`` or ``(H, W, 1 or 3)``, naming the way out."""
    shape = tuple(shape)
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3)):
        return
    hint = (": flat (n, d) vectors (an npz of rows, or --preprocess flatten) have no image "
            "to filter; only the raw front end takes them (--features raw)"
            if len(shape) == 1 else "")
    got = "(n" + "".join(f", {d}" for d in shape) + ")"
    raise InputError(f"{name} must be shaped (n, H, W) or (n, H, W, 3), got {got}{hint}")


def channels_first(images: np.ndarray) -> np.ndarray:
    """``(n, H, W[, C])`` -> ``(n, C, H, W)``; gray images get C = 1."""
    if images.ndim == 3:
        return images[:, None]
    return np.ascontiguousarray(np.moveaxis(images, -1, 1))


def pool_matrix(size: int, grid: int) -> np.ndarray:
    """``(grid, size)`` averaging matrix over ``grid`` near-equal contiguous bins.

    Bins follow ``floor(i * size / grid)`` edges (adaptive average pooling),
    so a grid that does not divide the size still covers every pixel once.
    """
    if not 1 <= grid <= size:
        raise InputError(f"pooling grid {grid} must be between 1 and the image side {size}")
    edges = [(i * size) // grid for i in range(grid + 1)]
    P = np.zeros((grid, size), dtype=np.float32)
    for i in range(grid):
        P[i, edges[i]:edges[i + 1]] = 1.0 / (edges[i + 1] - edges[i])
    return P


class FeatureMap:
    """Base class of the image front ends.

    Subclasses set ``name``, store their parameters in ``__init__`` (listed in
    ``_param_names``), and implement ``_transform_batch`` and
    ``_dim_for_shape``. Maps that learn from data set ``needs_fit = True`` and
    override ``_fit``; maps that can compute a column chunk cheaply derive from
    :class:`ColumnChunked` too.
    """

    name = "base"
    needs_fit = False
    #: Whether the features come in column chunks (:class:`ColumnChunked`).
    streamable = False
    #: Whether a streamed K standardizes each feature column first (randconv's codes
    #: differ in scale by filter); False where the features are the kernel's own
    #: (rff: Phi Phi^T approximates the Gaussian kernel only unscaled).
    stream_standardize = True
    # True for maps that only flatten: they take any (n, ...) array, not just images.
    any_shape = False
    _param_names: tuple[str, ...] = ()
    #: The parameter that sets the number of units where the user chooses it (randconv:
    #: "n_filters"), so that a plan can say how many fit; None where it is fixed.
    unit_param: str | None = None

    def __init__(self, *, seed: int = 0, batch_size: int = DEFAULT_BATCH):
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.input_shape_: tuple[int, ...] | None = None
        self._fitted = False

    # -- description ---------------------------------------------------------------
    @property
    def params(self) -> dict:
        """Everything that defines the features (JSON-able), seed included."""
        out = {k: jsonable(getattr(self, k)) for k in self._param_names}
        out["seed"] = self.seed
        return out

    @property
    def preprocessing(self) -> list[str]:
        """The steps applied to the [0, 1] images, in order, as short strings."""
        return []

    @property
    def dim(self) -> int:
        """Feature dimension for the image shape seen by ``fit`` (or ``transform``)."""
        if self.input_shape_ is None:
            raise InputError(f"{self.name} features: the dimension depends on the image shape; "
                             "call fit(images) first")
        return self._dim_for_shape(self.input_shape_)

    def dim_for(self, image_shape) -> int:
        """Feature dimension for images of shape ``(H, W)`` or ``(H, W, C)``."""
        if not self.any_shape:
            check_image_shape(image_shape, name=f"{self.name} features' images")
        return self._dim_for_shape(tuple(image_shape))

    def working_bytes(self, n_images: int, image_shape=None) -> int:
        """Peak bytes that fitting on and transforming ``n_images`` images hold, besides
        the images themselves and the float32 ``(n, dim)`` features returned.

        What a planner adds to the feature matrices (or a streamed chunk) before
        anything is allocated: the most of (the finiteness check of the input,
        the fit's peak, the fitted state plus the transform's per-batch
        temporaries). ``tests/test_front_end_memory.py`` holds every map's
        figure against the peak measured at small n.

        Parameters
        ----------
        n_images : int
            The most images transformed in one call (the larger split).
        image_shape : tuple, optional
            ``(H, W)`` or ``(H, W, C)``; default: the shape ``fit`` saw.
        """
        if image_shape is None:
            if self.input_shape_ is None:
                raise InputError(f"{self.name} features: give the image shape, or fit first")
            image_shape = self.input_shape_
        shape = tuple(int(s) for s in image_shape)
        self.dim_for(shape)                              # the shape is one this map takes
        n = int(n_images)
        fit, state, temps = self._memory(n, shape)
        check = n * int(np.prod(shape))                  # as_images' isfinite: a bool a value
        return int(max(check, fit, state + temps)) + WORKING_OVERHEAD

    def state_fingerprint(self) -> str:
        """sha1 of what ``fit`` learned (empty-state maps: of nothing); used by the cache."""
        h = hashlib.sha1()
        for arr in self._fitted_arrays():
            a = np.ascontiguousarray(arr)
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(a.view(np.uint8).ravel())
        return h.hexdigest()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    # -- fitting and transforming ----------------------------------------------------
    def fit(self, images, y=None) -> FeatureMap:
        """Learn what is learned from the training images; returns ``self``."""
        images = as_images(images, any_shape=self.any_shape)
        self.input_shape_ = images.shape[1:]
        self._fit(images)
        self._fitted = True
        return self

    def transform(self, images, progress: bool = False) -> np.ndarray:
        """Features of ``images``: float32 ``(n, dim)``, computed ``batch_size`` rows at a time."""
        images = self._check_input(images)
        n = len(images)
        out = np.empty((n, self._dim_for_shape(images.shape[1:])), dtype=np.float32)
        step = max(1, self.batch_size)
        bar = tqdm(total=n, desc=f"{self.name} features", unit="img", disable=not progress,
                   delay=2)  # no bar (and no meaningless rate) for sub-second transforms
        for i in range(0, n, step):
            out[i:i + step] = self._transform_batch(images[i:i + step])
            bar.update(min(step, n - i))
        bar.close()
        return out

    def fit_transform(self, images, y=None, progress: bool = False) -> np.ndarray:
        return self.fit(images).transform(images, progress=progress)

    # -- fitted state as plain arrays (what a saved model holds) ---------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """What ``fit`` learned, as named arrays (empty for maps that learn nothing).

        With :attr:`params` and ``input_shape_`` it is the whole fitted map:
        :meth:`set_state` rebuilds it from them, so a saved model holds numbers,
        never Python objects.
        """
        if self.input_shape_ is None:
            raise InputError(f"{self.name} features have no fitted state yet; call "
                             "fit(images) first")
        return {name: getattr(self, name) for name in self._state_spec(self.input_shape_)}

    def set_state(self, input_shape, arrays: dict) -> FeatureMap:
        """Make this map the fitted one that :meth:`state_arrays` described; returns ``self``.

        Parameters
        ----------
        input_shape : sequence of int
            The image shape ``fit`` saw (``input_shape_``).
        arrays : dict of str to ndarray
            Exactly the arrays :meth:`state_arrays` gave, with their shapes and dtypes.

        Raises
        ------
        InputError
            A missing or extra array, a shape or dtype that this map's
            parameters and ``input_shape`` do not give.
        """
        shape = tuple(input_shape)
        if not (1 <= len(shape) <= 3 and all(isinstance(s, int) and not isinstance(s, bool)
                                             and s >= 1 for s in shape)):
            raise InputError(f"{self.name} features: input shape must be 1 to 3 positive "
                             f"integers, got {input_shape!r}")
        spec = self._state_spec(shape)
        if set(arrays) != set(spec):
            raise InputError(f"{self.name} features hold the fitted arrays "
                             f"{sorted(spec) or 'none'}, got {sorted(arrays) or 'none'}")
        for name, (want_shape, want_dtype) in spec.items():
            a = arrays[name]
            if not isinstance(a, np.ndarray) or a.shape != want_shape \
                    or a.dtype != np.dtype(want_dtype):
                got = (f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray)
                       else type(a).__name__)
                raise InputError(f"{self.name} features: fitted array {name} must be "
                                 f"{np.dtype(want_dtype)} {want_shape} for these parameters "
                                 f"and images of shape {shape}, got {got}")
        for name in spec:
            setattr(self, name, arrays[name])
        self.input_shape_ = shape
        self._fitted = True
        return self

    @property
    def features_per_unit(self) -> int:
        """Columns per unit (filter) of a chunked map; 1 for the others."""
        return 1

    # -- what subclasses provide ---------------------------------------------------------
    def _fit(self, images: np.ndarray) -> None:
        """Learn from training images (default: nothing)."""

    def _fitted_arrays(self) -> list[np.ndarray]:
        return []

    def _state_spec(self, input_shape: tuple[int, ...]) -> dict[str, tuple[tuple, str]]:
        """Name -> (shape, dtype) of each array ``fit`` sets, for images of ``input_shape``."""
        return {}

    def _transform_batch(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _dim_for_shape(self, shape: tuple[int, ...]) -> int:
        raise NotImplementedError

    def _check_input(self, images) -> np.ndarray:
        images = as_images(images, any_shape=self.any_shape)
        if self.needs_fit and not self._fitted:
            raise InputError(f"{self.name} features learn from data: call fit(train_images) "
                             "before transform")
        if self.input_shape_ is None:
            self.input_shape_ = images.shape[1:]
        elif images.shape[1:] != self.input_shape_:
            raise InputError(f"{self.name} features were set up for images of shape "
                             f"{self.input_shape_}, got {images.shape[1:]}")
        return images


class ColumnChunked:
    """Mixin of the maps whose features come in column chunks, cheaply (streamable).

    Subclasses provide ``n_units``, ``features_per_unit`` and
    ``_transform_units(images, u0, u1, progress)``; :func:`iter_column_chunks`
    feeds :func:`kernelfit.engine.gram.stream.build_gram_streamed`.
    """

    streamable = True

    @property
    def n_units(self) -> int:
        """Number of units (filters) the columns are grouped by."""
        raise NotImplementedError

    def _transform_units(self, images, u0: int, u1: int, progress: bool) -> np.ndarray:
        """Features of units ``[u0, u1)``: float32 ``(n, (u1 - u0) * features_per_unit)``."""
        raise NotImplementedError

    def n_column_chunks(self, chunk_filters: int) -> int:
        """How many column chunks of ``chunk_filters`` units cover the features."""
        if int(chunk_filters) < 1:
            raise InputError(f"chunk_filters must be >= 1, got {chunk_filters!r}")
        return -(-self.n_units // int(chunk_filters))

    def column_range(self, c: int, chunk_filters: int) -> tuple[int, int]:
        """Columns ``[j0, j1)`` of the full feature vector that chunk ``c`` holds."""
        n_chunks = self.n_column_chunks(chunk_filters)
        if not 0 <= c < n_chunks:
            raise InputError(f"column chunk {c} out of range: there are {n_chunks}")
        u0 = c * int(chunk_filters)
        u1 = min(u0 + int(chunk_filters), self.n_units)
        return u0 * self.features_per_unit, u1 * self.features_per_unit

    def transform_columns(self, images, c: int, chunk_filters: int,
                          progress: bool = False) -> np.ndarray:
        """The features of unit chunk ``c`` only: float32 ``(n, d_c)``.

        Equal to ``transform(images)[:, j0:j1]`` with ``(j0, j1) = column_range(c, ...)``.
        """
        images = self._check_input(images)
        j0, j1 = self.column_range(c, chunk_filters)
        f = self.features_per_unit
        return self._transform_units(images, j0 // f, j1 // f, progress)

    def iter_column_chunks(self, train_images, test_images, chunk_filters: int,
                           progress: bool = False):
        """Yield ``(Phi_train_c, Phi_test_c)`` for every chunk: the input of
        :func:`kernelfit.engine.gram.stream.build_gram_streamed`."""
        n_chunks = self.n_column_chunks(chunk_filters)
        bar = tqdm(total=n_chunks, desc=f"{self.name} chunks", unit="chunk",
                   disable=not progress, delay=2)
        for c in range(n_chunks):
            yield (self.transform_columns(train_images, c, chunk_filters),
                   self.transform_columns(test_images, c, chunk_filters))
            bar.update()
        bar.close()

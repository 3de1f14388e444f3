"""Kernel functions, evaluated on blocks of rows.

Every kernel here is a function of the inner product <x, y> and the squared
norms ||x||^2, ||y||^2 only. That is what lets one code path serve a Gram
block computed from raw rows (one GEMM, then :meth:`Kernel.from_inner`) and a
Gram matrix accumulated from streamed feature chunks (K_lin += Phi_c Phi_c^T,
then the same map applied once at the end).

Distances use the expansion ||x - y||^2 = ||x||^2 + ||y||^2 - 2 <x, y>,
clamped at 0 (rounding can make it slightly negative for near-equal points).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from kernelfit import errors
from kernelfit.engine.backend import backend_of
from kernelfit.engine.network_kernels import (
    DEFAULT_WEIGHT_STD,
    check_network_params,
    recursion,
    relu_network_diag,
)
from kernelfit.errors import InputError
from kernelfit.params import real, whole

KERNELS = ("linear", "gaussian", "laplacian", "polynomial", "nngp", "ntk")
#: The kernels of a fully connected ReLU network (:mod:`kernelfit.engine.network_kernels`): no
#: bandwidth (gamma, sigma); parameters depth, weight_std, bias_std and the input dimension.
NETWORK_KERNELS = ("nngp", "ntk")

# What to do when a bandwidth is so small that the kernel relates no two points (K = I):
# said where sigma itself is unusable and where a fitted K turns out to be the identity.
SCALE_REMEDY = ("use a bandwidth comparable to the distances between points: the median "
                "pairwise distance (kernelfit.pipeline.select_grid.median_distance), "
                "--sigma auto (chosen around it on a validation split), or sigma and gamma "
                "omitted (--sigma / --gamma omitted, sigma=None) for the default scale "
                "1 / (d Var(X))")


@dataclass(frozen=True)
class Kernel:
    """A kernel and its parameters.

    Parameters
    ----------
    name : {"linear", "gaussian", "laplacian", "polynomial"}
        linear: <x, y>.
        gaussian: exp(-gamma ||x - y||^2), gamma = 1 / (2 sigma^2).
        laplacian: exp(-gamma ||x - y||) with the Euclidean norm (as in
        Belkin et al. and EigenPro; scikit-learn's ``laplacian_kernel`` uses
        the L1 norm instead), gamma = 1 / sigma.
        polynomial: (gamma <x, y> + coef0) ** degree.
        nngp, ntk: the NNGP and neural tangent kernel of a fully connected ReLU
        network of ``depth`` hidden layers (:mod:`kernelfit.engine.network_kernels`).
    gamma : float
        Scale, already resolved (see :func:`make_kernel` for sigma and the
        data-dependent default).
    degree, coef0 :
        Polynomial kernel only.
    depth, weight_std, bias_std, dim :
        nngp and ntk only: hidden layers, the Dense layers' sw and sb, and the
        input dimension d (the first layer divides by sqrt(d)).
    """

    name: str = "gaussian"
    gamma: float = 1.0
    degree: int = 3
    coef0: float = 1.0
    depth: int = 1
    weight_std: float = DEFAULT_WEIGHT_STD
    bias_std: float = 0.0
    dim: int | None = None

    def __post_init__(self):
        if self.name not in KERNELS:
            raise InputError(f"unknown kernel {self.name!r}; choose one of {', '.join(KERNELS)}")
        real("kernel gamma", self.gamma, 0, lo_open=True)
        whole("polynomial degree", self.degree, 1)
        real("polynomial coef0", self.coef0)
        check_network_params(self.depth, self.weight_std, self.bias_std)
        if self.is_network:
            whole(f"the {self.name} kernel's input dimension dim", self.dim, 1,
                  hint="make_kernel resolves it from X")

    @property
    def is_network(self) -> bool:
        return self.name in NETWORK_KERNELS

    def check_dtype(self, dtype) -> None:
        """Refuse a scale that ``dtype`` cannot hold (the kernel map multiplies by it there).

        gamma = 5e199 (sigma = 1e-100) is fine in float64 (K = I up to rounding) but
        overflows float32 to inf; gamma below float32's smallest normal number would
        make K all ones.
        """
        if self.name == "linear" or self.is_network:    # no scale multiplies their values
            return
        fi = np.finfo(np.dtype(dtype))
        if not float(fi.tiny) <= self.gamma <= float(fi.max):
            raise InputError(
                f"the {self.name} kernel's gamma = {self.gamma:.3g} is outside what "
                f"{np.dtype(dtype).name} can hold ({float(fi.tiny):.3g} .. {float(fi.max):.3g}),"
                " so its kernel values cannot be computed there. Use dtype='float64', or a "
                "bandwidth comparable to the distances between points.")

    @property
    def needs_norms(self) -> bool:
        return self.name in ("gaussian", "laplacian") or self.is_network

    @property
    def params(self) -> dict:
        """Parameters for a run record (only those that matter for this kernel)."""
        out = {"name": self.name}
        if self.is_network:
            return {**out, **self.network_params, "dim": self.dim}
        if self.name != "linear":
            out["gamma"] = self.gamma
        if self.name == "gaussian":
            out["sigma"] = float(np.sqrt(0.5 / self.gamma))
        if self.name == "laplacian":
            out["sigma"] = 1.0 / self.gamma
        if self.name == "polynomial":
            out.update(degree=self.degree, coef0=self.coef0)
        return out

    @property
    def network_params(self) -> dict:
        """depth, weight_std and bias_std (the nngp / ntk parameters a user gives)."""
        return dict(depth=int(self.depth), weight_std=float(self.weight_std),
                    bias_std=float(self.bias_std))

    def from_inner(self, G, sq_rows=None, sq_cols=None):
        """Turn a block of inner products into kernel values, in place.

        Parameters
        ----------
        G : array (m, k) of any backend (NumPy, CuPy, torch, array API)
            <x_i, y_j>; overwritten with k(x_i, y_j) and returned.
        sq_rows, sq_cols : array (m,), (k,)
            Squared norms of the rows and the columns (needed by the distance
            kernels; host or G's backend, cast to G's dtype and device).
        """
        if self.name == "linear":
            return G
        be = backend_of(G)
        if self.name == "polynomial":
            be.mul_(G, float(self.gamma))
            G += float(self.coef0)
            if self.degree != 1:
                be.pow_(G, int(self.degree))
            return G
        if sq_rows is None or sq_cols is None:
            raise InputError(f"the {self.name} kernel needs the squared norms of rows and columns")
        if self.is_network:
            return self._network_from_inner(be, G, _like(be, sq_rows, G), _like(be, sq_cols, G))
        # d2 = ||x||^2 + ||y||^2 - 2<x,y>, written into G without temporaries.
        be.mul_(G, -2.0)
        G += _like(be, sq_rows, G)[:, None]
        G += _like(be, sq_cols, G)[None, :]
        be.clamp0_(G)
        if self.name == "laplacian":
            be.sqrt_(G)
        # -gamma d2 may overflow to -inf for far-apart points: exp gives the exact 0.
        be.mul_(G, -float(self.gamma))
        be.exp_(G)
        return G

    def _network_from_inner(self, be, G, sq_rows, sq_cols, rows: int = 256):
        """nngp / ntk values into G, a few rows at a time: the recursion's temporaries
        (about ten arrays of G's rows) stay small beside a panel of n columns."""
        ntk = self.name == "ntk"
        for r0 in range(0, G.shape[0], rows):
            r1 = min(r0 + rows, G.shape[0])
            G[r0:r1, ...] = recursion(G[r0:r1, ...], sq_rows[r0:r1, None], sq_cols[None, :],
                                      d=self.dim, ntk=ntk, **self.network_params)[int(ntk)]
        return G

    def block(self, X, Y, sq_x=None, sq_y=None, out=None):
        """k(X_i, Y_j) for row blocks X (m, d) and Y (k, d), in X's dtype and backend.

        ``out`` (m, k) receives the result when given: its rows may be strided
        (a row panel of a larger matrix) as long as its last axis is unit-stride.
        """
        be = backend_of(X)
        G = be.inner_into(out, X, Y)
        if self.needs_norms:
            sq_x = be.row_sq_norms(X) if sq_x is None else sq_x
            sq_y = be.row_sq_norms(Y) if sq_y is None else sq_y
        return self.from_inner(G, sq_x, sq_y)

    def diag(self, X, sq_x=None):
        """k(x_i, x_i) for every row, in float64 (exact, no cancellation)."""
        if self.name in ("gaussian", "laplacian"):
            return np.ones(len(X))
        sq = row_sq_norms(X) if sq_x is None else np.asarray(sq_x, dtype=np.float64)
        if self.name == "linear":
            return sq
        if self.is_network:         # c = 1 on the diagonal: exact, no arc-cosine
            return relu_network_diag(sq, d=self.dim, **self.network_params)[
                1 if self.name == "ntk" else 0]
        with np.errstate(over="ignore"):       # inf is reported by the solve (NonFiniteError)
            return (self.gamma * sq + self.coef0) ** int(self.degree)

    def as_dict(self) -> dict:
        return asdict(self)


def _like(be, v, G):
    """Norms ``v`` (host or device) in G's dtype, on G's device."""
    if isinstance(v, np.ndarray) and be.name != "numpy":
        return be.asarray(v, be.dtype_name(G))
    return be.astype(v, be.dtype_name(G))


def row_sq_norms(X) -> np.ndarray:
    """Squared Euclidean norm of each row of a host array, accumulated in float64."""
    from kernelfit.engine.backend import get_backend
    return get_backend("numpy").row_sq_norms(np.asarray(X))


def check_scale(gamma, sigma, kernel: str | None = None) -> None:
    """The kernel scale is given as gamma or as sigma (the bandwidth), never both; and
    never to a network kernel (``kernel`` "nngp" / "ntk"), which has none."""
    if kernel in NETWORK_KERNELS and (gamma is not None or sigma is not None):
        raise errors.ParameterError(
            f"the {kernel} kernel has no bandwidth (got gamma={gamma!r}, sigma={sigma!r}): "
            "drop --gamma / --sigma; its parameters are depth, weight_std and bias_std")
    if gamma is not None and sigma is not None:
        raise errors.ParameterError(f"give the kernel scale as gamma or as sigma, not both (got "
                             f"gamma={gamma!r}, sigma={sigma!r}); --sigma S is gamma = "
                             "1 / (2 S^2) for the gaussian kernel, 1 / S for the laplacian")


def default_gamma(X=None, *, dim: int | None = None) -> float:
    """scikit-learn's "scale" rule, gamma = 1 / (d Var(X)).

    ``dim``: features standardized to variance 1 (a streamed K, whose feature
    matrix is never held), so gamma = 1 / dim. For MNIST pixels in [0, 1] the
    rule gives sigma ~ 6 (the paper's setting is sigma = 5).
    """
    if dim is not None:
        return 1.0 / int(dim)
    if X is None:
        raise InputError("the default kernel scale is computed from X; pass X, gamma or sigma")
    X = np.asarray(X)
    var = float(np.var(X, dtype=np.float64))
    return 1.0 / (X.shape[1] * var) if var > 0 else 1.0


def make_kernel(name="gaussian", *, gamma=None, sigma=None, degree=3, coef0=1.0, X=None,
                dim: int | None = None, depth=1, weight_std=DEFAULT_WEIGHT_STD,
                bias_std=0.0) -> Kernel:
    """Build a :class:`Kernel`, resolving sigma and the default scale.

    ``sigma`` is the bandwidth (gaussian: gamma = 1 / (2 sigma^2); laplacian:
    gamma = 1 / sigma). With neither gamma nor sigma given, gamma follows
    :func:`default_gamma`, which needs ``X`` (or ``dim`` for standardized
    features). nngp and ntk take ``depth``, ``weight_std`` and ``bias_std``
    instead of a scale, and their input dimension from ``X`` (or ``dim``).
    """
    if name not in KERNELS:
        raise InputError(f"unknown kernel {name!r}; choose one of {', '.join(KERNELS)}")
    check_scale(gamma, sigma, name)
    if name in NETWORK_KERNELS:
        check_network_params(depth, weight_std, bias_std)
        if dim is None and X is None:
            raise InputError(f"the {name} kernel divides by the input dimension: pass X or dim")
        d = int(dim) if dim is not None else int(np.shape(X)[1])
        return Kernel(name=name, depth=int(depth), weight_std=float(weight_std),
                      bias_std=float(bias_std), dim=d)
    for label, v in (("gamma", gamma), ("sigma", sigma)):
        real(label, v, 0, lo_open=True, allow_none=True, hint="None: the default scale")
    if sigma is not None:
        gamma = _gamma_from_sigma(name, float(sigma))
    whole("polynomial degree", degree, 1)   # int(2.5) would silently fit a degree-2 kernel
    if gamma is None:
        gamma = 1.0 if name == "linear" else default_gamma(X, dim=dim)
    real("polynomial coef0", coef0)
    return Kernel(name=name, gamma=float(gamma), degree=int(degree), coef0=float(coef0))


def _gamma_from_sigma(name: str, sigma: float) -> float:
    """gamma for a bandwidth sigma, refusing one that float64 cannot represent.

    sigma = 1e-300 or 1e300 would make gamma = 1 / (2 sigma^2) overflow (K = I
    up to rounding, NaN once inf * 0 meets the diagonal) or underflow to 0 (K =
    all ones); caught here instead of a bare ZeroDivisionError / OverflowError.
    """
    try:
        gamma = 0.5 / sigma**2 if name == "gaussian" else 1.0 / sigma
    except (OverflowError, ZeroDivisionError):
        gamma = math.inf if sigma < 1 else 0.0
    if not np.finfo(np.float64).tiny <= gamma < math.inf:
        what = "1 / (2 sigma^2)" if name == "gaussian" else "1 / sigma"
        effect = ("every off-diagonal kernel value underflows to 0 (K = I: predictions "
                  "vanish away from the training points)" if sigma < 1 else
                  "K is all ones (singular)")
        raise InputError(f"sigma={sigma!r} is outside what float64 can use: gamma = {what} "
                         f"{'overflows' if sigma < 1 else 'underflows'} and {effect}. "
                         f"{SCALE_REMEDY[0].upper()}{SCALE_REMEDY[1:]}.")
    return gamma

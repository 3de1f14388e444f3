"""The NNGP and NTK of a fully connected ReLU network, as functions of <x, y>, ||x||^2, ||y||^2.

A fully connected ReLU network whose hidden layers grow infinitely wide is a
Gaussian process over its inputs (Lee et al., ICLR 2018: the NNGP kernel), and
gradient descent on it from its random start follows kernel regression with its
neural tangent kernel (Jacot et al., NeurIPS 2018; Lee et al., NeurIPS 2019).
For ReLU both kernels have closed forms layer by layer: the Gaussian
expectations E[relu(u) relu(v)] and E[relu'(u) relu'(v)] are the arc-cosine
kernels of degree 1 and 0 (Cho & Saul, NeurIPS 2009).

The conventions are neural-tangents' ``stax`` ones, so the two can be checked
against each other: the network
``stax.serial(*[Dense(w, W_std=sw, b_std=sb), Relu()] * depth, Dense(1, W_std=sw, b_std=sb))``
in the NTK parameterization (each Dense divides by the square root of its
fan-in; the first one's fan-in is the input dimension d). With
K0 = Theta0 = sw^2 <x, y> / d + sb^2, each of the ``depth`` ReLU + Dense pairs maps

    c   = K(x, y) / sqrt(K(x, x) K(y, y)),  t = arccos(c)
    K'  = sw^2 sqrt(K(x, x) K(y, y)) (sin t + (pi - t) c) / (2 pi) + sb^2
    Th' = K' + sw^2 Theta (pi - t) / (2 pi)

and the diagonal follows K'(x, x) = sw^2 K(x, x) / 2 + sb^2. Each entry costs
one inner product and O(depth) element-wise work, like a Gaussian kernel, so
the engine serves these kernels as it serves the others (in memory, on disk,
streamed, on any backend).
"""

from __future__ import annotations

import math

import numpy as np

from kernelfit.params import real, whole

#: neural-tangents' default-free choice that keeps a ReLU layer's variance: sw^2 / 2 = 1.
DEFAULT_WEIGHT_STD = 2.0 ** 0.5


def check_network_params(depth, weight_std, bias_std, d=None) -> None:
    """Refuse parameters the recursion has no meaning for (InputError says which; finite)."""
    whole("network depth", depth, 0)
    real("network weight_std", weight_std, 0, lo_open=True)
    real("network bias_std", bias_std, 0)
    if d is not None:
        whole("network input dimension d", d, 1)


def relu_network_kernels(inner, sq_x, sq_y, *, d, depth, weight_std=DEFAULT_WEIGHT_STD,
                         bias_std=0.0):
    """NNGP and NTK of a fully connected ReLU network of ``depth`` hidden layers.

    Parameters
    ----------
    inner : array (any shape, any array-API backend)
        Inner products <x, y>.
    sq_x, sq_y : arrays broadcastable to ``inner``
        ||x||^2 and ||y||^2 (for a block: ``sq_x[:, None]``, ``sq_y[None, :]``),
        in ``inner``'s namespace.
    d : int
        Input dimension (the first layer's fan-in).
    depth : int >= 0
        Hidden ReLU layers; 0 is the linear kernel sw^2 <x, y> / d + sb^2.
    weight_std, bias_std : float
        sw > 0 and sb >= 0 of every Dense layer.

    Returns
    -------
    (nngp, ntk) : two new arrays of ``inner``'s shape and dtype.

    The arc-cosine's argument is clamped to [-1, 1] (rounding puts x = y at
    1 + eps and antipodal points at -1 - eps), and a zero variance (a zero
    vector without bias) gives c = 0 instead of 0 / 0: its covariances are 0
    whatever c is, so nothing is lost and no NaN appears.
    """
    check_network_params(depth, weight_std, bias_std, d)
    return recursion(inner, sq_x, sq_y, d=d, depth=depth, weight_std=weight_std,
                     bias_std=bias_std, ntk=True)


def recursion(inner, sq_x, sq_y, *, d, depth, weight_std, bias_std, ntk: bool):
    """:func:`relu_network_kernels` for checked parameters; ``ntk=False`` skips the NTK's
    own work (about a third of it) and returns (nngp, None)."""
    import array_api_compat

    xp = array_api_compat.array_namespace(inner)
    w2, b2 = float(weight_std) ** 2, float(bias_std) ** 2
    K = inner * (w2 / d) + b2
    kx = sq_x * (w2 / d) + b2
    ky = sq_y * (w2 / d) + b2
    Th = K
    if depth:
        tiny = xp.full((), float(np.finfo(np.dtype(_dtype_name(K))).tiny), dtype=K.dtype,
                       device=array_api_compat.device(K))
    for _ in range(int(depth)):
        # sqrt of each factor, not of their product: no overflow for huge norms, and for a
        # block (kx a column, ky a row) two short square roots instead of one per entry
        norm = xp.sqrt(kx) * xp.sqrt(ky)
        c = xp.clip(K / xp.maximum(norm, tiny), min=-1.0, max=1.0)
        t = xp.acos(c)
        e = norm * (xp.sin(t) + (math.pi - t) * c) * (1.0 / (2.0 * math.pi))  # E[relu relu]
        K = e * w2 + b2
        if ntk:
            ed = (math.pi - t) * (1.0 / (2.0 * math.pi))      # E[relu'(u) relu'(v)]
            Th = K + (Th * ed) * w2
        kx = kx * (w2 / 2.0) + b2
        ky = ky * (w2 / 2.0) + b2
    if not ntk:
        return K, None
    return K, (Th if depth else K * 1.0)


def relu_network_diag(sq, *, d, depth, weight_std=DEFAULT_WEIGHT_STD, bias_std=0.0):
    """k(x, x) of both kernels in float64 from ||x||^2 (host arrays): (nngp_diag, ntk_diag).

    On the diagonal c = 1 and t = 0, so the recursion is exact without the
    arc-cosine: K' = sw^2 K / 2 + sb^2 and Th' = K' + sw^2 Th / 2.
    """
    check_network_params(depth, weight_std, bias_std, d)
    w2, b2 = float(weight_std) ** 2, float(bias_std) ** 2
    K = np.asarray(sq, dtype=np.float64) * (w2 / d) + b2
    Th = K.copy()
    for _ in range(int(depth)):
        K = K * (w2 / 2.0) + b2
        Th = K + Th * (w2 / 2.0)
    return K, Th


def _dtype_name(a) -> str:
    return str(a.dtype).removeprefix("torch.").rsplit(".", 1)[-1]

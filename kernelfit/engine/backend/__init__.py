"""Where a run's arrays live, and the few primitives the array API lacks.

The engine is written once against a :class:`Backend` (:mod:`.base`: the
array-API namespace and device of the arrays, and generic standard-only
primitives, so the engine runs under ``array-api-strict``);
:class:`NumpyBackend` (:mod:`.numpy_backend`), :class:`CupyBackend`
(:mod:`.cupy_backend`) and :class:`TorchBackend` (:mod:`.torch_backend`)
override them with the libraries' in-place, LAPACK/cuSOLVER-backed versions.
This module resolves a run's backend (:func:`get_backend`,
:func:`resolve_backend`, :func:`backend_of`); libraries are imported only when
their backend is asked for.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from kernelfit.engine.backend.base import Backend
from kernelfit.engine.backend.cupy_backend import CupyBackend, import_cupy
from kernelfit.engine.backend.numpy_backend import NumpyBackend
from kernelfit.engine.backend.torch_backend import TorchBackend, import_torch
from kernelfit.errors import BackendError, InputError
from kernelfit.options import BACKENDS as BACKEND_CHOICES
from kernelfit.options import check_backend_device

__all__ = ["BACKENDS", "BACKEND_CHOICES", "Backend", "CupyBackend", "NumpyBackend",
           "TorchBackend", "backend_of", "get_backend", "import_cupy", "import_torch",
           "resolve_backend"]

#: What ``--backend`` accepts besides "auto" (a GPU when one is present).
BACKENDS = tuple(b for b in BACKEND_CHOICES if b != "auto")

# A CUDA driver exposes this device node; without it "auto" needs no GPU library import.
_NVIDIA_NODE = "/dev/nvidiactl"


@functools.lru_cache(maxsize=8)
def get_backend(name: str = "numpy", device: str | None = None) -> Backend:
    """The backend a run asked for ("auto": torch on a GPU if one is present, else NumPy)."""
    if name == "auto":
        name, device = _auto(device)
    if name == "numpy":
        check_backend_device(name, device)
        return NumpyBackend()
    if name == "torch":
        return TorchBackend(device)
    if name == "cupy":
        return CupyBackend(device)
    raise InputError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")


def resolve_backend(options, solver: str = "cholesky") -> Backend:
    """The backend of a fit: ``options.backend`` and ``options.device`` resolved.

    "auto" takes a GPU for the exact solve only: the CG solvers and the
    matrix-free path run on the host (NumPy) whatever "auto" finds.
    """
    name = options.backend
    if name == "auto" and solver != "cholesky":
        name = "numpy"
    return get_backend(name, options.device)


def _auto(device):
    """A GPU when one is usable (PyTorch first, then CuPy), else NumPy on the host."""
    if device == "cpu" or not os.path.exists(_NVIDIA_NODE):
        return "numpy", None
    try:
        import torch
        if torch.cuda.is_available():
            return "torch", device
    except ImportError:
        pass
    try:
        import_cupy()
        return "cupy", device
    except BackendError:
        pass
    return "numpy", None


def backend_of(a) -> Backend:
    """The backend that owns array ``a`` (its library and device)."""
    if isinstance(a, np.ndarray):
        return get_backend("numpy")
    mod = type(a).__module__.split(".")[0]
    if mod == "torch":
        return get_backend("torch", str(a.device))
    if mod == "cupy":
        return get_backend("cupy", f"cuda:{a.device.id}")
    import array_api_compat
    xp = array_api_compat.array_namespace(a)
    return _generic(xp, array_api_compat.device(a))


@functools.lru_cache(maxsize=4)
def _generic(xp, device) -> Backend:
    return Backend(xp, device)

"""Import kymatio under SciPy >= 1.17, which removed ``scipy.special.sph_harm``.

kymatio 0.3.0 imports ``from scipy.special import sph_harm`` in its 3-D
filter bank, and ``kymatio/__init__`` imports every frontend, so even the 2-D
scattering fails to import with SciPy 1.17. Rather than pin SciPy, we put a
shim with the old signature back into ``scipy.special`` before kymatio is
imported. Only the 3-D scattering ever calls it.

Old: ``sph_harm(m, n, theta, phi)`` with theta the azimuth and phi the polar
angle. New: ``sph_harm_y(n, m, theta, phi)`` with theta the *polar* angle and
phi the azimuth. So ``sph_harm(m, n, az, pol) == sph_harm_y(n, m, pol, az)``.
"""

from __future__ import annotations

import scipy.special

from kernelfit.errors import BackendError


def sph_harm(m, n, theta, phi):
    """SciPy's removed ``sph_harm``: Y_n^m at azimuth ``theta``, polar angle ``phi``."""
    return scipy.special.sph_harm_y(n, m, phi, theta)


def install_sph_harm_shim() -> bool:
    """Put :func:`sph_harm` into ``scipy.special`` if it is missing; True if installed."""
    if hasattr(scipy.special, "sph_harm"):
        return False
    scipy.special.sph_harm = sph_harm
    return True


def import_scattering2d(backend: str):
    """Return kymatio's ``Scattering2D`` class for ``backend`` ("torch" or "numpy")."""
    install_sph_harm_shim()
    try:
        if backend == "torch":
            from kymatio.torch import Scattering2D
        elif backend == "numpy":
            from kymatio.numpy import Scattering2D
        else:
            raise BackendError(f"unknown scattering backend {backend!r}; use 'torch' or 'numpy'")
    except ImportError as exc:
        raise BackendError(f"scattering features need kymatio (and torch for the torch "
                           f"backend): install kernelfit[scattering] ({exc})") from exc
    return Scattering2D


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True

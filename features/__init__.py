"""Image front ends: raw pixels, Gabor bank, wavelet scattering, random conv-net, random
Fourier features.

Every map takes float32 images scaled to [0, 1], shaped (n, H, W) or
(n, H, W, 3), and returns float32 rows (n, dim); see :mod:`.base` for the
contract and :func:`make_features` for construction by name.
"""

from __future__ import annotations

import inspect

from kernelfit.errors import InputError
from kernelfit.features.base import FeatureMap
from kernelfit.features.cache import cached_transform
from kernelfit.features.gabor import GaborBank
from kernelfit.features.randconv import RandomConvFeatures
from kernelfit.features.raw import RawPixels
from kernelfit.features.rff import RandomFourierFeatures
from kernelfit.features.scattering import ScatteringFeatures

FEATURES = ("raw", "gabor", "scattering", "randconv", "rff")

_CLASSES: dict[str, type[FeatureMap]] = {
    "raw": RawPixels,
    "gabor": GaborBank,
    "scattering": ScatteringFeatures,
    "randconv": RandomConvFeatures,
    "rff": RandomFourierFeatures,
}


def feature_params(name: str) -> tuple[str, ...]:
    """The keyword parameters ``make_features(name, ...)`` accepts (besides seed)."""
    if name not in _CLASSES:
        raise InputError(f"unknown features {name!r}; choose one of {', '.join(FEATURES)}")
    sig = inspect.signature(_CLASSES[name].__init__)
    return tuple(p for p in sig.parameters if p not in ("self", "seed"))


def make_features(name: str, *, seed: int = 0, **params) -> FeatureMap:
    """Build the feature map called ``name`` with the given parameters.

    Parameters
    ----------
    name : {"raw", "gabor", "scattering", "randconv", "rff"}
    seed : int
        Randomness (random filters, patch samples); the same seed gives the same features.
    **params
        The map's keyword parameters (see its class docstring).

    Raises
    ------
    InputError
        For an unknown name or parameter; the message lists the valid ones.
    """
    valid = feature_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise InputError(f"unknown parameter(s) {', '.join(unknown)} for {name} features; "
                         f"valid: {', '.join(valid)}")
    return _CLASSES[name](seed=seed, **params)


__all__ = ["FEATURES", "FeatureMap", "GaborBank", "RandomConvFeatures", "RandomFourierFeatures",
           "RawPixels",
           "ScatteringFeatures", "cached_transform", "feature_params", "make_features"]

"""kernelfit: exact minimum-norm kernel interpolation on real image data.

``from kernelfit import KernelInterpolant, KernelInterpolantClassifier, Options``.
The estimators are imported on first use (module ``__getattr__``), so that
``import kernelfit`` stays cheap for the command line and the data tools.
"""

__version__ = "0.1.0"

from kernelfit.options import Options  # noqa: E402

_LAZY = {"KernelInterpolant": "model", "KernelInterpolantClassifier": "model"}

__all__ = ["KernelInterpolant", "KernelInterpolantClassifier", "Options", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

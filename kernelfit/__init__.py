"""kernelfit: exact minimum-norm kernel interpolation on real image data."""

__version__ = "0.1.0"

from .options import Options  # noqa: E402

__all__ = ["Options", "__version__"]

"""Figures: matplotlib behind the ``plots`` extra, drawn off-screen, saved whole or not at all.

Each experiment module draws its own figures; this module holds only what
they share: importing pyplot with a clear error when the extra is missing,
and writing the PNG atomically (a killed run leaves no half image).
"""

from __future__ import annotations

from pathlib import Path

from .atomic import atomic_path
from .errors import MissingDependencyError


def pyplot():
    """matplotlib.pyplot on the off-screen Agg backend, or :class:`MissingDependencyError`."""
    try:
        import matplotlib
    except ImportError as err:
        raise MissingDependencyError("matplotlib", "plots", "drawing figures") from err
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path, *, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically, close it, and return the path."""
    plt = pyplot()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path

"""Figures: matplotlib behind the ``plots`` extra, drawn off-screen, saved whole or not at all.

Each experiment module draws its own figures; this module holds only what
they share: importing pyplot with a clear error when the extra is missing,
plain tick labels on log axes, and writing the PNG atomically (a killed run
leaves no half image).
"""

from __future__ import annotations

import math
from pathlib import Path

from kernelfit.atomic import atomic_path
from kernelfit.errors import InputError, MissingDependencyError


def pyplot():
    """matplotlib.pyplot on the off-screen Agg backend, or :class:`MissingDependencyError`."""
    try:
        import matplotlib
    except ImportError as err:
        raise MissingDependencyError("matplotlib", "plots", "drawing figures") from err
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def plain_log_ticks(axis, template: str = "{:g}", ticks=None) -> None:
    """Plain numbers on a log axis ("300", "2 s"), not matplotlib's 3 x 10^2.

    Parameters
    ----------
    axis : matplotlib.axis.Axis
        ``ax.xaxis`` or ``ax.yaxis``, already on a log scale.
    template : str
        How a tick value is written (``"{:g} s"`` adds a unit).
    ticks : sequence of float, optional
        Where the labelled ticks go, the minor ones then unlabelled; by
        default matplotlib's, major and minor both labelled.
    """
    from matplotlib.ticker import FuncFormatter, NullFormatter

    label = FuncFormatter(lambda v, _: template.format(v))
    if ticks is not None:
        axis.set_ticks(list(ticks))
    axis.set_major_formatter(label)
    axis.set_minor_formatter(NullFormatter() if ticks is not None else label)


#: Below this ratio high / low, log-axis ticks go 1, 2, 5 x 10^k; from it on, only 10^k
#: (at three decades, "5,000" and "10,000" already run into each other).
DENSE_TICKS_SPAN = 1000


def log_ticks(low: float, high: float) -> list[float]:
    """Ticks from the last one <= ``low`` to the first one >= ``high``, for a log axis.

    1, 2, 5 x 10^k (three a decade) while the values span less than
    :data:`DENSE_TICKS_SPAN`, only the powers of 10 from there on: few enough to be
    written out as plain numbers at any span.
    """
    if not 0 < low <= high or not math.isfinite(high):
        raise InputError(f"log-axis ticks need 0 < low <= high < inf, got {low!r}, {high!r}: "
                         "a value that is zero, negative or not finite has no place on a log "
                         "axis; draw it on a linear one")
    steps = (1, 2, 5) if high < DENSE_TICKS_SPAN * low else (1,)
    values = [m * 10.0 ** e for e in range(math.floor(math.log10(low)) - 1,
                                            math.ceil(math.log10(high)) + 1) for m in steps]
    first = max(v for v in values if v <= low * (1 + 1e-12))
    last = min(v for v in values if v >= high * (1 - 1e-12))
    return [float(f"{v:.12g}") for v in values if first <= v <= last]


def save_figure(fig, path, *, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically, close it, and return the path."""
    plt = pyplot()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path

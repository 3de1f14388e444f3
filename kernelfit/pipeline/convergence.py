"""The convergence plot of an iterative solve: residual and validation error per iteration."""

from __future__ import annotations

from kernelfit.errors import InputError
from kernelfit.plots import pyplot, save_figure


def plot_convergence(convergence: dict, path, *, title: str = "PCG convergence"):
    """Draw ``convergence`` (a run record's, or a pcg ``solver_info_``) to a PNG at ``path``.

    Left axis: the largest relative residual of the output columns (log scale)
    of the validation run, and of the refit on all points when there was one;
    right axis, when the solve stopped on a validation split: its error, with
    the chosen iteration t* marked.
    """
    history = (convergence or {}).get("history") or []
    if not history:
        raise InputError("no per-iteration history to plot: the solve recorded none "
                         "(only solver='pcg' does)")
    plt = pyplot()
    its = [h["iteration"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.semilogy(its, [h["relative_residual"] for h in history], "o-", color="C0", ms=3,
                label="relative residual (max over outputs)")
    refit = (convergence.get("refit") or {}).get("history") or []
    if refit:
        ax.semilogy([h["iteration"] for h in refit], [h["relative_residual"] for h in refit],
                    "^-", color="C2", ms=3, label="refit on all points")
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("relative residual", color="C0")
    if all("val_error" in h for h in history):
        ax2 = ax.twinx()
        ax2.plot(its, [100 * h["val_error"] for h in history], "s-", color="C1", ms=3,
                 label="validation error")
        ax2.set_ylabel("validation error (%)", color="C1")
        best = convergence.get("returned_iteration")
        if best:
            ax2.axvline(best, color="C1", ls=":", lw=1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)

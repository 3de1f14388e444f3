"""What `kernelfit sgd linear` shows of its runs: labels, a Markdown summary, the curves."""

from __future__ import annotations

from pathlib import Path

from kernelfit.pipeline.report import pct
from kernelfit.studies.sgd.linear_record import fit_text, fitted, settled


def label(record: dict) -> str:
    """A short legend / table label: the method and its step."""
    c = record["config"]
    how = f"EigenPro k={c['precondition_rank']}" if c["precondition_rank"] else "plain SGD"
    return f"{how}, b={c['batch_size']}, lr={record['lr']:.3g}, init {c['init']}"


def summary_table(records: list[dict]) -> str:
    """Markdown: one line per run, then its notes."""
    lines = ["| run | data | epochs | epochs to fit | train err (0 from epoch) | test err "
             "(exact; within 0.2 pt from epoch) | rel dist to limit | RKHS dist / norm "
             "| norm (min-norm; limit) | monotone | SGD time |", "|---" * 11 + "|"]
    for r in records:
        c, h = r["config"], r["history"]
        zero = settled(h, fitted)
        exact = r["test_error_exact"]
        near = settled(h, lambda m, exact=exact: abs(m["test_error"] - exact) <= 0.002)
        lines.append(
            f"| {c['form']}: {label(r)} | {c['dataset']} n={r['n_train']} d={r['dim']} "
            f"{r['kernel']['name']} {r.get('randomization', 'none')} | {r['epochs_run']} | "
            f"{fit_text(r)} | {pct(r['train_error'])} ({zero}) | "
            f"{pct(r['test_error'])} ({pct(r['test_error_exact'])}; {near}) | "
            f"{r['rel_dist']:.3g} | "
            f"{r['rel_rkhs_dist']:.3g} | {r['norm']:.4g} ({r['norm_min']:.4g}; "
            f"{r['norm_limit']:.4g}) | {'yes' if r['monotone'] else 'NO'} | "
            f"{r['timings']['sgd']:.1f} s |")
    for r in records:
        if "norm_ratio" in r:
            lines.append(f"\n{label(r)}: its limit w* + P_null(w0) has norm "
                         f"{r['norm_limit']:.4g} vs ||w*|| = {r['norm_min']:.4g} "
                         f"(+{r['norm_excess']:.4g}, x{r['norm_ratio']:.4f}); ||w_T - w*|| / "
                         f"||w*|| = {r['rel_dist_min_norm']:.3g}")
        lines += [f"\nnote ({label(r)}): {n}" for n in r["notes"]]
    return "\n".join(lines) + "\n"


#: Each panel: title, and its y-axis label (with the unit, where the quantity has one).
PANELS = (
    ("train (solid) / test (dashed) error", "error (%)"),
    ("training loss (MSE)", "squared error per point"),
    ("||theta_t - theta_lim|| / ||theta_lim||", "relative distance (ratio)"),
    ("RKHS distance ||theta_t - theta_lim||_K", "RKHS distance (RKHS norm)"),
    ("norm of the iterate (dotted: minimum norm)", "norm of theta_t (RKHS norm)"),
    ("RKHS error: top-k eigen-directions (solid) / rest (dashed)", "RKHS error (RKHS norm)"),
)


def plot_runs(records: list[dict], path) -> Path:
    """Per-epoch curves of one or more runs on the same axes (:func:`figure`), saved as a PNG."""
    from kernelfit.plots import save_figure

    return save_figure(figure(records), path)


def figure(records: list[dict]):
    """Per-epoch curves of one or more runs on the same axes; errors in %, as in the tables."""
    from kernelfit.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, (title, ylabel) in zip(axes.flat, PANELS, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
    for i, r in enumerate(records):
        h, col = r["history"], f"C{i}"
        ep = [m["epoch"] for m in h]
        ax = axes.flat
        ax[0].plot(ep, [100 * m["train_error"] for m in h], color=col, label=label(r))
        ax[0].plot(ep, [100 * m["test_error"] for m in h], color=col, ls="--")
        ax[0].axhline(100 * r["test_error_exact"], color="k", ls=":", lw=1)
        for j, key in ((1, "loss"), (2, "rel_dist"), (3, "rkhs_dist")):
            ax[j].semilogy(ep, [max(m[key], 1e-300) for m in h], color=col)
        ax[4].plot(ep, [m["norm"] for m in h], color=col)
        ax[4].axhline(r["norm_min"], color="k", ls=":", lw=1)
        if r["norm_limit"] != r["norm_min"]:
            ax[4].axhline(r["norm_limit"], color=col, ls=":", lw=1)
        if "rkhs_top" in h[0]:
            ax[5].semilogy(ep, [max(m["rkhs_top"], 1e-300) for m in h], color=col)
            ax[5].semilogy(ep, [max(m["rkhs_rest"], 1e-300) for m in h], color=col, ls="--")
    if not any("rkhs_top" in r["history"][0] for r in records):
        axes.flat[5].text(0.5, 0.5, "no split: run with --precondition-rank K", ha="center",
                          transform=axes.flat[5].transAxes)
        axes.flat[5].set_axis_off()
    worst = 100 * max(r["test_error_exact"] for r in records)
    axes.flat[0].set_ylim(-0.5, min(100.0, max(15.0, 2.5 * worst)))   # the start is off-scale
    axes.flat[0].legend(fontsize=8)
    c = records[0]["config"]
    fig.suptitle(f"SGD on the linear model ({c['form']} form, {c['dataset']}, "
                 f"n = {records[0]['n_train']}, {records[0]['kernel']['name']} kernel) "
                 f"vs the exact minimum-norm interpolant (dotted: exact)", fontsize=11)
    fig.tight_layout()
    return fig

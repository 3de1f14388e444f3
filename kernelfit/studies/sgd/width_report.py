"""What the width study shows of its records: per-width averages, fitted slopes, a table, a plot.

The theory (Lee et al., NeurIPS 2019) predicts that the distance between a
trained network in the NTK parameterization and its linearization shrinks like
width^-1/2; the slope of log(distance) against log(width), fitted by least
squares over the widths (on the mean over seeds), is set beside that -1/2.
"""

from __future__ import annotations

import numpy as np

from kernelfit.pipeline.report import pct

#: The per-time measurements averaged over seeds (``dist_flow``: gradient descent only).
MEASURES = ("dist", "dist_train", "dist_flow", "test_error_net", "test_error_lin",
            "train_error_net", "train_error_lin")
#: The per-run kernel measurements: at the start, and how far it moved while training.
KERNEL_MEASURES = ("ntk_init_dist", "ntk_change")


def loglog_slope(x, y) -> float:
    """Least-squares slope of log(y) against log(x)."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def _stats(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "max": float(v.max()), "n": len(v)}


def summarize(records: list[dict]) -> dict:
    """Per optimizer: per time t > 0, per width, each measure's mean / std / min / max over
    seeds, and the log-log slope of the mean distance against width."""
    widths = sorted({r["width"] for r in records})
    first = records[0]
    out = {"widths": widths, "seeds": sorted({r["seed"] for r in records}),
           "facts": {k: first[k] for k in ("n_train", "n_test", "dim", "n_classes",
                                            "lambda_max", "lambda_min", "eta",
                                            "eta_lambda_max", "ntk_interpolant_test_error",
                                            "ntk_points")},
           "optimizers": {}}
    for opt in first["optimizer"]:
        runs = {w: [r["optimizer"][opt] for r in records if r["width"] == w] for w in widths}
        times = [m["t"] for m in first["optimizer"][opt]["history"] if m["t"] > 0]
        per_t = {}
        for t in times:
            rows = {}
            for w in widths:
                ms = [next(m for m in run["history"] if m["t"] == t) for run in runs[w]]
                rows[str(w)] = {k: _stats([m[k] for m in ms]) for k in MEASURES if k in ms[0]}
            entry = {"widths": rows,
                     "slope": loglog_slope(widths, [rows[str(w)]["dist"]["mean"]
                                                    for w in widths])}
            if "dist_flow" in rows[str(widths[0])]:
                entry["slope_flow"] = loglog_slope(
                    widths, [rows[str(w)]["dist_flow"]["mean"] for w in widths])
            per_t[str(t)] = entry
        kernel = {k: {str(w): _stats([run[k] for run in runs[w]]) for w in widths}
                  for k in KERNEL_MEASURES}
        kernel_slopes = {k: loglog_slope(widths, [kernel[k][str(w)]["mean"] for w in widths])
                         for k in KERNEL_MEASURES}
        out["optimizers"][opt] = {"times": times, "per_time": per_t, "kernel": kernel,
                                  "kernel_slopes": kernel_slopes,
                                  "seconds": sum(run["seconds"] for w in widths
                                                 for run in runs[w])}
    return out


NAMES = {"gd": "gradient descent", "sgd": "SGD"}


def markdown(summary: dict) -> str:
    """A table per optimizer at its last time (one row per width), then the slopes."""
    f = summary["facts"]
    lines = [f"n = {f['n_train']} training / {f['n_test']} test images, d = {f['dim']}, "
             f"{f['n_classes']} outputs; lambda_max(Theta) = {f['lambda_max']:.4g}, eta = "
             f"{f['eta']:.4g} (eta lambda_max = {f['eta_lambda_max']:.3g}); seeds "
             f"{', '.join(map(str, summary['seeds']))}; the NTK interpolant from f_0 = 0 has "
             f"test error {pct(f['ntk_interpolant_test_error'])}.", ""]
    for opt, s in summary["optimizers"].items():
        T = s["times"][-1]
        per = s["per_time"][str(T)]["widths"]
        lines += [f"**{NAMES[opt]}**, t = {T} ({'steps' if opt == 'gd' else 'epochs'}); mean "
                  f"(min-max) over seeds:", "",
                  "| width | test distance net vs lin | test error net | test error lin "
                  "| train error net | kernel at start vs Theta | kernel moved |",
                  "|---|---|---|---|---|---|---|"]
        for w in summary["widths"]:
            r, k = per[str(w)], s["kernel"]
            lines.append(
                f"| {w:,} | {r['dist']['mean']:.4f} ({r['dist']['min']:.4f}-"
                f"{r['dist']['max']:.4f}) | {pct(r['test_error_net']['mean'])} | "
                f"{pct(r['test_error_lin']['mean'])} | {pct(r['train_error_net']['mean'])} | "
                f"{k['ntk_init_dist'][str(w)]['mean']:.4f} | "
                f"{k['ntk_change'][str(w)]['mean']:.4f} |")
        slopes = ", ".join(f"t={t}: {s['per_time'][str(t)]['slope']:+.3f}" for t in s["times"])
        lines += ["", f"log-log slope of the distance against width (theory: -0.5): {slopes}"]
        if "slope_flow" in s["per_time"][str(T)]:
            lines.append("to the gradient-flow formula (exp) instead: " + ", ".join(
                f"t={t}: {s['per_time'][str(t)]['slope_flow']:+.3f}" for t in s["times"]))
        lines += [f"kernel slopes: at start {s['kernel_slopes']['ntk_init_dist']:+.3f}, moved "
                  f"{s['kernel_slopes']['ntk_change']:+.3f}; {s['seconds']:.0f} s of training",
                  ""]
    return "\n".join(lines)


def figure(summary: dict, title: str = ""):
    """Three panels: distance vs width per time (log-log, width^-1/2 guide); the kernel's
    distances; test errors of network and linearization at the last time."""
    from kernelfit.plots import log_ticks, plain_log_ticks, pyplot

    plt = pyplot()
    widths = np.asarray(summary["widths"], dtype=float)
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    ax = axes[0]
    styles = {"gd": ("-", "o"), "sgd": ("--", "s")}
    lows, highs = [], []
    for opt, s in summary["optimizers"].items():
        ls, mk = styles[opt]
        for i, t in enumerate(s["times"]):
            if opt != "gd" and t != s["times"][-1] and "gd" in summary["optimizers"]:
                continue        # SGD at its last time only: beside GD's curves it is a twin
            per = s["per_time"][str(t)]
            d = [per["widths"][str(int(w))]["dist"] for w in widths]
            mean = np.array([x["mean"] for x in d])
            lo, hi = np.array([x["min"] for x in d]), np.array([x["max"] for x in d])
            ax.plot(widths, mean, ls=ls, marker=mk, ms=4, color=f"C{i}",
                    label=f"{opt} t={t} (slope {per['slope']:+.2f})")
            ax.fill_between(widths, lo, hi, color=f"C{i}", alpha=0.12, lw=0)
            lows.append(lo.min())
            highs.append(hi.max())
    gd = summary["optimizers"].get("gd") or next(iter(summary["optimizers"].values()))
    last = gd["per_time"][str(gd["times"][-1])]["widths"]
    # The guide goes through the geometric mean of the last time's curve, so its slope,
    # not its height, is what the eye compares.
    anchor = np.exp(np.mean(np.log([last[str(int(w))]["dist"]["mean"] for w in widths])))
    guide = anchor * (widths / np.exp(np.mean(np.log(widths)))) ** -0.5
    ax.plot(widths, guide, color="k", ls=":", lw=2, label="width$^{-1/2}$")
    _loglog(ax, widths, min(lows + [guide.min()]), max(highs + [guide.max()]),
            log_ticks, plain_log_ticks)
    ax.set_title("test-set ||f_net - f_lin|| / ||f_lin||", fontsize=10)
    ax.set_ylabel("relative distance (ratio)")
    ax.legend(fontsize=7, ncol=2)

    ax = axes[1]
    vals = []
    for opt, s in summary["optimizers"].items():
        ls, mk = styles[opt]
        for j, (key, what) in enumerate((("ntk_init_dist", "at start vs Theta"),
                                         ("ntk_change", "moved by training"))):
            if key == "ntk_init_dist" and opt != "gd" and "gd" in summary["optimizers"]:
                continue        # the same start for both optimizers: drawn once
            y = np.array([s["kernel"][key][str(int(w))]["mean"] for w in widths])
            vals += list(y)
            ax.plot(widths, y, ls=ls, marker=mk, ms=4, color=f"C{j + 5}",
                    label=f"{what} ({opt}; slope {s['kernel_slopes'][key]:+.2f})")
    g0 = vals[0] * (widths / widths[0]) ** -0.5
    ax.plot(widths, g0, color="k", ls=":", lw=2, label="width$^{-1/2}$")
    # The kernel's movement in training is expected to fall faster, like 1 / width
    # (its time derivative is O(1/width): Dyer & Gur-Ari, ICLR 2020): a second guide.
    moved = next(iter(summary["optimizers"].values()))["kernel"]["ntk_change"]
    g1 = moved[str(int(widths[0]))]["mean"] * (widths / widths[0]) ** -1.0
    ax.plot(widths, g1, color="k", ls="-.", lw=1, label="width$^{-1}$")
    _loglog(ax, widths, min(vals + list(g0) + list(g1)), max(vals + list(g0) + list(g1)),
            log_ticks, plain_log_ticks)
    ax.set_title(f"finite-width NTK on {summary['facts']['ntk_points']} training images "
                 "(relative Frobenius)", fontsize=10)
    ax.set_ylabel("relative distance (ratio)")
    ax.legend(fontsize=7)

    ax = axes[2]
    for opt, s in summary["optimizers"].items():
        ls, mk = styles[opt]
        T = s["times"][-1]
        per = s["per_time"][str(T)]["widths"]
        ax.plot(widths, [100 * per[str(int(w))]["test_error_net"]["mean"] for w in widths],
                ls=ls, marker=mk, color="C0", label=f"network, {opt} t={T}")
        ax.plot(widths, [100 * per[str(int(w))]["test_error_lin"]["mean"] for w in widths],
                ls=ls, marker=mk, color="C1", mfc="none", label=f"linearized, {opt} t={T}")
    ax.axhline(100 * summary["facts"]["ntk_interpolant_test_error"], color="k", ls=":", lw=1,
               label="NTK interpolant from f_0 = 0 (t = inf)")
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis, ticks=log_ticks(widths.min(), widths.max()))
    ax.set_xlabel("hidden width")
    ax.set_ylabel("test error (%)")
    ax.set_title("test error at the last time", fontsize=10)
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _loglog(ax, widths, low, high, log_ticks, plain_log_ticks) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.xaxis, ticks=log_ticks(widths.min(), widths.max()))
    plain_log_ticks(ax.yaxis, ticks=log_ticks(low, high))
    ax.set_xlabel("hidden width")


def plot(summary: dict, path, title: str = ""):
    """:func:`figure`, written atomically as a PNG at ``path``."""
    from kernelfit.plots import save_figure

    return save_figure(figure(summary, title), path)

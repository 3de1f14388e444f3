"""What a sweep shows: the CSV, the Markdown table, and the norm-versus-error plots.

Kept apart from :mod:`kernelfit.studies.sweeps`, which runs the points;
this module only reads finished points.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from kernelfit.pipeline.report import pct
from kernelfit.plots import plain_log_ticks

if TYPE_CHECKING:
    from kernelfit.studies.sweeps import Axis, Point


def corruption(randomize: str) -> float | None:
    """The label-corruption level p of a randomization spec (None: not a label test)."""
    from kernelfit.data.randomize import parse_randomization
    rand = parse_randomization(randomize)
    return 0.0 if rand.kind == "none" else rand.p if rand.kind == "labels" else None


CSV_COLUMNS = ("dataset", "n_train", "n_test", "features", "feature_dim", "kernel", "sigma",
               "gamma", "randomization", "corruption", "solver", "dtype", "lam", "jitter",
               "train_error", "test_error", "norm", "relative_residual", "seconds",
               "selection_rule", "selected", "warnings", "error", "record")


def _row(point: Point) -> dict:
    r = point.record or {}
    kern = r.get("kernel", {})
    sel = point.selection or {}
    return {
        "point": point.name, "status": point.status, "reused": point.reused, **point.labels,
        "dataset": point.config.dataset, "n_train": r.get("n_train", point.config.n_train),
        "n_test": r.get("n_test", point.config.n_test), "features": point.config.features,
        "feature_dim": r.get("feature_dim"), "kernel": point.config.kernel,
        "sigma": kern.get("sigma", point.config.sigma), "gamma": kern.get("gamma"),
        "randomization": r.get("randomization", point.config.randomize),
        "corruption": corruption(point.config.randomize), "solver": r.get("solver"),
        "dtype": r.get("dtype"), "lam": point.config.lam, "jitter": r.get("jitter"),
        "train_error": r.get("train_error"), "test_error": r.get("test_error"),
        "norm": r.get("norm"), "relative_residual": r.get("relative_residual"),
        "seconds": round(point.seconds, 3), "selection_rule": sel.get("rule"),
        "selected": json.dumps(sel["params"], sort_keys=True) if sel else None,
        "warnings": " | ".join(point.warnings) or None, "error": point.error,
        "record": f"points/{point.name}.json" if point.status != "not-run" else None,
    }


def to_csv(points: list[Point], axes: list[Axis]) -> str:
    """One row per point: its axis values, the headline numbers, status and error."""
    names = ["point", "status", "reused", *(a.name for a in axes)]
    columns = names + [c for c in CSV_COLUMNS if c not in names]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for p in points:
        writer.writerow({k: "" if v is None else v for k, v in _row(p).items()})
    return buf.getvalue()


def markdown(points: list[Point], axes: list[Axis], selections=()) -> str:
    """The grid as a Markdown table; failed points show their error; then the selections."""
    names = [a.name for a in axes]
    lines = ["| " + " | ".join(names + ["train error", "test error", "norm", "residual",
                                        "time", "status"]) + " |",
             "|" + "---|" * (len(names) + 6)]
    for p in points:
        r = p.record if p.status == "ok" else None
        cells = [p.labels[n] for n in names]
        cells += ([pct(r["train_error"]), pct(r["test_error"]), f"{r['norm']:.4g}",
                   f"{r['relative_residual']:.1e}"] if r else ["-"] * 4)
        status = p.status + (" (reused)" if p.reused else "")
        if p.error:
            status += ": " + p.error.replace("|", "/").splitlines()[0][:160]
        elif p.warnings:
            status += " (warnings: see CSV)"
        cells += [f"{p.seconds:.1f} s", status]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"\nselected once on clean labels, held fixed: {s['summary']}" for s in selections]
    return "\n".join(lines) + "\n" + "".join(n + "\n" for n in notes)


def _other(axes, *names) -> list[str]:
    return [a.name for a in axes if a.name not in names]


def _series(points, x_of, group) -> dict:
    """{line label: [(x, record), ...] sorted by x} over the successful points."""
    lines: dict[str, list] = {}
    for p in points:
        x = x_of(p) if p.status == "ok" else None
        if x is not None:
            label = ", ".join(f"{g}={p.labels[g]}" for g in group) or "all"
            lines.setdefault(label, []).append((x, p.record))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in lines.items()}


def _axis(axes, name):
    return next((a for a in axes if a.name == name), None)


def draw_plots(points: list[Point], axes: list[Axis], out_dir) -> tuple[dict, dict]:
    """Draw each study plot whose axes the grid has; returns ({name: path}, {name: why not})."""
    from kernelfit.plots import pyplot, save_figure

    drawn, skipped = {}, {}
    out_dir = Path(out_dir)
    rand, n_axis, feat = _axis(axes, "randomize"), _axis(axes, "n_train"), _axis(axes, "features")
    levels = {corruption(v) for v in rand.values} - {None} if rand else set()
    checks = {
        "error_vs_corruption": (len(levels) >= 2, "needs --vary randomize with at least two "
                                "label-corruption levels (none, labels:P, random-labels)"),
        "norm_vs_n": (n_axis is not None and len(n_axis.values) >= 2,
                      "needs --vary n_train with at least two values"),
        "norm_vs_error": (feat is not None and len(feat.values) >= 2,
                          "needs --vary features with at least two front ends"),
    }
    for name, (ok, why) in checks.items():
        if not ok:
            skipped[name] = why
            continue
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 4.5))
        if name == "error_vs_corruption":
            have = _plot_error_vs_corruption(ax, points, axes)
        elif name == "norm_vs_n":
            have = _plot_norm_vs_n(ax, points, axes)
        else:
            have = _plot_norm_vs_error(ax, points, axes)
        if not have:
            plt.close(fig)
            skipped[name] = "no successful points to draw"
            continue
        ax.grid(True, which="both", alpha=0.25)
        handles = [h for a in fig.axes for h in a.get_legend_handles_labels()[0]]
        ax.legend(handles=handles, fontsize=7, loc="upper left", frameon=False,
                  bbox_to_anchor=(1.02 if len(fig.axes) == 1 else 1.14, 1.0))
        drawn[name] = save_figure(fig, out_dir / f"{name}.png")
    return drawn, skipped


def _title(points, what: str) -> str:
    ok = [p.record for p in points if p.status == "ok"]
    data = sorted({r["dataset"] for r in ok})
    tests = sorted({r["n_test"] for r in ok})
    sigmas = {r["kernel"].get("sigma") for r in ok}
    ns = {r["n_train"] for r in ok}
    held = f"; sigma = {sigmas.pop():.3g} at every point" if sigmas not in ({None}, set()) \
        and len(sigmas) == 1 else ""
    return (f"{what}\n{', '.join(data)}" + (f"; n = {ns.pop():,}" if len(ns) == 1 else "")
            + f"; test points: {', '.join(f'{t:,}' for t in tests)}" + held)


def _plot_error_vs_corruption(ax, points, axes) -> bool:
    from kernelfit.data import DATASETS
    lines = _series(points, lambda p: corruption(p.config.randomize),
                    _other(axes, "randomize"))
    # The norm on a right axis: it rises with p as the error does (not at all for the train error).
    norm_ax = ax.twinx() if 0 < len(lines) <= 4 else None
    for label, pts in lines.items():
        xs = [100 * x for x, _ in pts]
        tail = "" if label == "all" else f": {label}"
        (line,) = ax.plot(xs, [100 * r["test_error"] for _, r in pts], "o-",
                          label=f"test error{tail}")
        ax.plot(xs, [100 * r["train_error"] for _, r in pts], "x--", color=line.get_color(),
                label=f"train error{tail}")
        if norm_ax is not None:
            norm_ax.plot(xs, [r["norm"] for _, r in pts], "s:", color=line.get_color(),
                         alpha=0.6, label=f"norm (right axis){tail}")
    if norm_ax is not None:
        norms = [r["norm"] for pts in lines.values() for _, r in pts]
        if max(norms) > 20 * min(norms):
            norm_ax.set_yscale("log")
        else:
            norm_ax.set_ylim(0, None)
        norm_ax.set_ylabel("RKHS norm of the interpolant")
    if lines:
        k = len(DATASETS[points[0].config.dataset].classes)
        ax.axhline(100 * (1 - 1 / k), color="grey", ls=":", label=f"chance ({k} classes)")
    ax.set(xlabel="label corruption p (%)", ylabel="error (%)", ylim=(-2, 100),
           title=_title(points, "Kernel interpolant: error vs label corruption"))
    return bool(lines)


def _plot_norm_vs_n(ax, points, axes) -> bool:
    group = (["randomize"] if _axis(axes, "randomize") else []) + _other(axes, "n_train",
                                                                        "randomize")
    lines = _series(points, lambda p: p.record["n_train"], group)
    for label, pts in lines.items():
        ax.plot([x for x, _ in pts], [r["norm"] for _, r in pts], "o-", label=label)
    ax.set(xscale="log", yscale="log", xlabel="training points n", ylabel="RKHS norm of the "
           "interpolant", title=_title(points, "Interpolant norm vs n, per corruption level"))
    # ticks at the grid's n; plain numbers on both log axes (not 3 x 10^2)
    plain_log_ticks(ax.xaxis, "{:,.0f}", ticks=sorted({x for pts in lines.values()
                                                      for x, _ in pts}))
    plain_log_ticks(ax.yaxis)
    return bool(lines)


def _plot_norm_vs_error(ax, points, axes) -> bool:
    """One colour per front end, one marker per setting of the other axes."""
    others = _other(axes, "features")
    colors, markers, norms = {}, {}, []
    for p in points:
        if p.status != "ok":
            continue
        rest = ", ".join(f"{o}={p.labels[o]}" for o in others)
        color = colors.setdefault(p.labels["features"], f"C{len(colors) % 10}")
        marker = markers.setdefault(rest, "osD^vPX*"[len(markers) % 8])
        r = p.record
        ax.plot([100 * r["test_error"]], [r["norm"]], marker, color=color, ms=8, ls="none",
                label=p.labels["features"] + (f" | {rest}" if rest else ""))
        if r["kernel"].get("sigma") is not None:    # each front end has its own bandwidth
            ax.annotate(f"sigma={r['kernel']['sigma']:.3g}", (100 * r["test_error"], r["norm"]),
                        fontsize=7, textcoords="offset points", xytext=(6, -3))
        norms.append(r["norm"])
    if norms and max(norms) > 20 * min(norms):
        ax.set_yscale("log")
    ax.margins(x=0.15)      # room for the sigma labels
    ax.set(xlabel="test error (%)", ylabel="RKHS norm of the interpolant",
           title=_title(points, "Norm vs test error across front ends"))
    return bool(norms)

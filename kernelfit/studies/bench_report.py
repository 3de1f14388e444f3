"""The benchmark's report: the rows of `kernelfit bench solve` as a Markdown table and a plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_COLUMNS = ("backend", "device", "dtype", "n", "Gram s", "Gram % of matmul", "factor s",
            "solve s", "total s", "factor GFLOP/s", "% of matmul", "rel. residual (limit)",
            "status")


def _cells(r: dict) -> list[str]:
    head = [r["backend"], r["device"] or "-", r["dtype"], f"{r['n']:,}"]
    if r["status"] == "skipped":
        return head + ["-"] * 8 + [f"skipped: {r['reason']}"]
    return head + [f"{r['gram_s']:.3f}", _num(r.get("gram_vs_peak"), ".0%"),
                   _num(r["factor_s"], ".3f"), f"{r['solve_s']:.3f}",
                   f"{r['total_s']:.3f}", _num(r["factor_gflops"], ".1f"),
                   _num(r["factor_vs_peak"], ".0%") + ("!" if r.get("peak_note") else ""),
                   f"{r['relative_residual']:.1e} ({r['residual_limit']:.0e})",
                   r["status"] + (" (reused)" if r.get("reused") else "")]


def _num(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown(doc: dict) -> str:
    """The rows as a Markdown table (it reads as a terminal table too), peaks and devices above."""
    lines = []
    for key, by_dtype in doc["peaks"].items():
        b = key.split("/")[0]
        rates = ", ".join(f"{dt} {p['gflops']:.1f} GFLOP/s" for dt, p in by_dtype.items())
        lines.append(f"- {key} ({doc['devices'][b]['name']}): matmul peak {rates}")
    lines.append("")
    lines.append("| " + " | ".join(_COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in _COLUMNS) + "|")
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in doc["rows"]]
    if any(r.get("peak_note") for r in doc["rows"]):
        lines += ["", "!: the factor ran faster than the matmul peak measured for its device "
                      "and dtype, so that peak understates the device (a slower matmul path, "
                      "or a busy machine) and the ratio is not a share of a true peak."]
    bad = [r for r in doc["rows"] if r["status"] == "INACCURATE"]
    if bad:
        lines.append("")
        lines.append(f"WARNING: {len(bad)} row(s) left a residual above what their dtype "
                     "allows; their times are not those of a correct solve.")
    return "\n".join(lines)


def plot_bench(doc: dict, path) -> Path:
    """Log-log total and factor time vs n per backend/dtype, with an n^3 guide line."""
    from kernelfit.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    series = {}
    for r in doc["rows"]:
        if r["status"] != "skipped":
            series.setdefault((r["backend"], r["device"], r["dtype"]), []).append(r)
    ns_all, anchor = [], None
    for i, (key, rs) in enumerate(sorted(series.items())):
        rs = sorted(rs, key=lambda r: r["n"])
        ns = [r["n"] for r in rs]
        ns_all += ns
        color = f"C{i % 10}"
        label = f"{key[0]} ({key[1]}) {key[2]}"
        ax.loglog(ns, [r["total_s"] for r in rs], "o-", color=color, label=f"{label}: total")
        fs = [r for r in rs if r["factor_s"]]        # a K^+ y row has no factor time
        if not fs:
            continue
        ax.loglog([r["n"] for r in fs], [r["factor_s"] for r in fs], "s--", color=color,
                  alpha=0.7, label=f"{label}: factor")
        last = fs[-1]
        # The guide runs through the largest n of the fastest factor.
        if anchor is None or last["n"] ** 3 / last["factor_s"] > anchor[0] ** 3 / anchor[1]:
            anchor = (last["n"], last["factor_s"])
    if anchor:
        grid = np.geomspace(min(ns_all), max(ns_all), 50)
        ax.loglog(grid, anchor[1] * (grid / anchor[0]) ** 3, ":", color="gray",
                  label=r"$\propto n^3$")
    ax.set_xlabel("n (training points)")
    ax.set_ylabel("seconds")
    ax.set_title(f"kernelfit exact solve, d = {doc['config']['d']}")
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no backend measured", transform=ax.transAxes, ha="center")
    return save_figure(fig, path)

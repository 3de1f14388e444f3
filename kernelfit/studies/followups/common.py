"""What the follow-up studies share: their sweeps, tables beside the published figures, plots.

Every study is a preset over :func:`kernelfit.studies.sweeps.run_sweep`:
each part is a sweep in its own folder under the study's ``--out`` (``points/``
one resumable record per point, keyed like every other result), and the study
writes one CSV and one Markdown file of its own beside them, each table row
holding kernelfit's figure and the published one (paper, figure or table, or
:data:`NOT_VERIFIABLE` where the number could not be read from the paper).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kernelfit.atomic import write_text_atomic
from kernelfit.errors import InputError
from kernelfit.pipeline.report import pct
from kernelfit.pipeline.run import RunConfig
from kernelfit.studies.sweeps import Axis, parse_axis, run_sweep

#: What a table says where the paper's own number could not be read.
NOT_VERIFIABLE = "not verifiable"

#: The papers, as the tables cite them.
BMM18 = ("Belkin, Ma & Mandal, \"To understand deep learning we need to understand kernel "
         "learning\", ICML 2018 (arXiv 1802.01396)")
BHMM19 = ("Belkin, Hsu, Ma & Mandal, \"Reconciling modern machine-learning practice and the "
          "classical bias-variance trade-off\", PNAS 116(32) 2019 (arXiv 1812.11118)")
SGW19 = ("Spigler, Geiger & Wyart, \"Asymptotic learning curves of kernel methods: empirical "
         "data versus teacher-student paradigm\", J. Stat. Mech. 2020 (arXiv 1905.10843)")


@dataclass
class Part:
    """One sweep of a study: a base config, its axes, and the folder it writes."""

    name: str
    base: RunConfig
    axes: list[str]
    tag: str = ""          # what the study's tables call this part (a method, a fit)


@dataclass
class StudyResult:
    """A study's rows (one dict per table line), files written, and failed points."""

    name: str
    rows: list = field(default_factory=list)
    files: dict = field(default_factory=dict)
    failed: list = field(default_factory=list)
    summary: list = field(default_factory=list)     # lines printed after the table
    measures: dict = field(default_factory=dict)    # the figures a test or a caller reads


def run_part(part: Part, out_dir, *, log=print) -> list:
    """Run one sweep of a study (resumable) and return its points in grid order.

    The sweep's own CSV and table are written in ``out_dir/part.name``; its
    plots are not (the study draws its own).
    """
    axes: list[Axis] = [parse_axis(spec) for spec in part.axes]
    log(f"-- {part.name}")
    result = run_sweep(part.base, axes, Path(out_dir) / part.name, plot=False, log=log)
    return result.points


def ok_records(points) -> list[tuple[dict, dict]]:
    """(labels, record) of every point that ran to a checked result."""
    return [(p.labels, p.record) for p in points if p.status == "ok"]


def failures(points) -> list[str]:
    return [f"{p.name}: {p.error.splitlines()[0] if p.error else p.status}"
            for p in points if p.status != "ok"]


def check_sizes(name: str, values, low: int = 1) -> list[int]:
    """Positive integers, strictly increasing (a study's n or N grid)."""
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise InputError(f"{name} must be integers >= {low}, got {v!r}")
        out.append(int(v))
    if not out or any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise InputError(f"{name} must be a non-empty increasing list, got {out}")
    return out


def fmt(v, digits: int = 4) -> str:
    """A table cell: numbers with ``digits`` significant digits, None as '-'."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else str(v)
    return str(v)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A Markdown table of ``rows``: ``columns`` are (key, header) pairs; percentages for
    keys ending in ``error`` (fractions in the rows)."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, rule]
    for r in rows:
        cells = []
        for key, _ in columns:
            v = r.get(key)
            cells.append(pct(v) if key.endswith("error") and isinstance(v, float)
                         else fmt(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    """Every key of every row, in first-seen order (missing cells empty)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    return buf.getvalue()


def write_report(out_dir, name: str, rows: list[dict], sections: list[str]) -> dict:
    """``NAME.csv`` (every row) and ``NAME.md`` (the sections, joined) in ``out_dir``."""
    out_dir = Path(out_dir)
    return {"csv": write_text_atomic(out_dir / f"{name}.csv", to_csv(rows)),
            "markdown": write_text_atomic(out_dir / f"{name}.md",
                                          "\n".join(s.rstrip() + "\n" for s in sections))}


def log_slope(x, y) -> float:
    """The least-squares slope of log y against log x (nan with fewer than two usable
    points: a y <= 0 has no logarithm)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2 or np.ptp(np.log(x[keep])) == 0:
        return math.nan
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def line_plot(path, series: dict, *, xlabel: str, ylabel: str, title: str,
              logx: bool = False, logy: bool = False, hlines: dict | None = None,
              vlines: dict | None = None, percent: bool = False):
    """One panel: ``series`` maps a label to (x, y) or (x, y, yerr); ``hlines`` /
    ``vlines`` map a label to a level drawn dashed across the panel."""
    from kernelfit.plots import log_ticks, plain_log_ticks, pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    scale = 100.0 if percent else 1.0
    for label, xy in series.items():
        x, y = np.asarray(xy[0], float), np.asarray(xy[1], float) * scale
        if len(xy) > 2 and xy[2] is not None:
            ax.errorbar(x, y, yerr=np.asarray(xy[2], float) * scale, marker="o", ms=4,
                        capsize=3, label=label)
        else:
            ax.plot(x, y, marker="o", ms=4, label=label)
    for label, level in (hlines or {}).items():
        ax.axhline(level * scale, ls="--", lw=1, color="gray")
        ax.annotate(label, (0.01, level * scale), xycoords=("axes fraction", "data"),
                    fontsize=8, color="gray", va="bottom")
    for label, level in (vlines or {}).items():
        ax.axvline(level, ls=":", lw=1, color="black")
        ax.annotate(label, (level, 0.98), xycoords=("data", "axes fraction"), fontsize=8,
                    rotation=90, va="top", ha="right")
    xs = [v for xy in series.values() for v in np.asarray(xy[0], float)]
    ys = [v * scale for xy in series.values() for v in np.asarray(xy[1], float)]
    ys += [v * scale for v in (hlines or {}).values()]
    for on, axis, values in ((logx, ax.xaxis, xs), (logy, ax.yaxis, ys)):
        if on:
            (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log")
            values = [v for v in values if v > 0 and math.isfinite(v)]
            # labelled ticks at 1, 2, 5 x 10^k (or 10^k over wide spans), plain numbers
            plain_log_ticks(axis, "{:,.6g}", ticks=log_ticks(min(values), max(values)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + (" (%)" if percent else ""))
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)

"""The paper's Figure 1 from SGD-trained networks, one `sgd net` run per point.

(a) Training loss against steps under each randomization test (true labels,
random labels, shuffled pixels, random pixels, Gaussian inputs). (b) Time to
reach 100% training accuracy (epochs, steps on a second axis) against the
label-corruption level p of ``labels:p``. (c) Test error at the end of
training against p. Every point is a :func:`~.sgd.train.train_net` run in
one :class:`ResultStore`, so a rerun (or a panel sharing points with another:
p = 0 is panel a's true labels, p = 1 its random labels) reuses it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from kernelfit.errors import InputError
from kernelfit.plots import pyplot, save_figure
from kernelfit.studies.sgd.train import NetConfig, train_net

PANEL_A = ("none", "random-labels", "shuffled-pixels", "random-pixels", "gaussian")
LABELS_A = {"none": "true labels", "random-labels": "random labels",
            "shuffled-pixels": "shuffled pixels", "random-pixels": "random pixels",
            "gaussian": "Gaussian"}
PANELS = ("a", "b", "c")


def parse_levels(text: str) -> list[float]:
    """``"0,0.2,...,1"`` -> sorted distinct corruption levels in [0, 1]."""
    try:
        levels = sorted({float(t) for t in str(text).split(",") if t.strip()})
    except ValueError as err:
        raise InputError(f"--levels takes comma-separated numbers in [0, 1], got {text!r}") \
            from err
    if not levels or any(not (math.isfinite(p) and 0.0 <= p <= 1.0) for p in levels):
        raise InputError(f"--levels takes comma-separated numbers in [0, 1], got {text!r}")
    return levels


def _spec(p: float) -> str:
    return "none" if p == 0 else ("random-labels" if p == 1 else f"labels:{p:g}")


def run_figure1(base: NetConfig, out_dir, *, panels="abc", levels=(0, 0.2, 0.4, 0.6, 0.8, 1.0)):
    """Run (or reuse) every point the requested panels need.

    Parameters
    ----------
    base : NetConfig
        Model, data and optimizer; its ``randomize`` is replaced per point.
    out_dir : str or Path
        The store for every point's record (and the figure).
    panels : str
        Any of ``"a"``, ``"b"``, ``"c"``.
    levels : sequence of float
        Label-corruption levels for panels b and c.

    Returns
    -------
    dict
        ``"a"``: {spec: record}, ``"levels"``: [(p, record)], ``"table"``: Markdown.
    """
    panels = "".join(sorted(set(panels)))
    if not panels or any(p not in PANELS for p in panels):
        raise InputError(f"panels must be letters from 'abc', got {panels!r}")
    levels = parse_levels(",".join(str(p) for p in levels))
    out = {"a": {}, "levels": []}
    if "a" in panels:
        for spec in PANEL_A:
            out["a"][spec] = train_net(replace(base, randomize=spec), out_dir)[0]
    if "b" in panels or "c" in panels:
        for p in levels:
            out["levels"].append((p, train_net(replace(base, randomize=_spec(p)), out_dir)[0]))
    out["table"] = table(out)
    return out


def table(results: dict) -> str:
    """One Markdown row per run: what Figure 1 plots, as numbers."""
    rows = ["| randomization | fitted | epochs | steps | train error | test error | final loss "
            "| seconds |", "|---|---|---|---|---|---|---|---|"]
    seen = set()
    runs = list(results["a"].values()) + [r for _, r in results["levels"]]
    for r in runs:
        if r["randomization"] in seen:
            continue
        seen.add(r["randomization"])
        test = "-" if r["test_error"] is None else f"{100 * r['test_error']:.2f}%"
        rows.append(f"| {r['randomization']} | {'yes' if r['fitted'] else 'no'} | {r['epochs']} "
                    f"| {r['steps']} | {100 * r['train_error']:.2f}% | {test} | "
                    f"{r['final_loss']:.4g} | {r['seconds']:.1f} |")
    return "\n".join(rows)


def draw_figure1(results: dict, out_dir, *, panels="abc", model: str = "") -> list[Path]:
    """Draw the panels into one PNG (``figure1.png``) or one per panel (``figure1X.png``)."""
    plt = pyplot()
    panels = "".join(p for p in PANELS if p in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        {"a": _panel_a, "b": _panel_b, "c": _panel_c}[panel](ax, results)
    if model:
        fig.suptitle(f"{model}: {_data_line(results)}")
    fig.tight_layout()
    name = "figure1.png" if panels == "abc" else f"figure1{panels}.png"
    return [save_figure(fig, Path(out_dir) / name)]


def _data_line(results) -> str:
    runs = list(results["a"].values()) + [r for _, r in results["levels"]]
    r = runs[0]
    return f"{r['dataset']}, {r['n_train']:,} train / {r['n_test']:,} test"


def _panel_a(ax, results):
    # Distinct dashes: curves that coincide (true labels, shuffled pixels) stay visible.
    for (spec, r), dash in zip(results["a"].items(), ("-", "--", "-.", ":", (0, (5, 1, 1, 1))),
                               strict=False):
        steps = [h["steps"] for h in r["history"]]
        ax.plot(steps, [h["loss"] for h in r["history"]], linestyle=dash, label=LABELS_A[spec])
    ax.set_xlabel("steps")
    ax.set_ylabel("average training loss (epoch)")
    ax.set_title("(a) learning curves")
    ax.legend(fontsize=8)


def _panel_b(ax, results):
    ps = [p for p, _ in results["levels"]]
    recs = [r for _, r in results["levels"]]
    fit = [(p, r["epochs_to_fit"]) for p, r in zip(ps, recs, strict=True) if r["fitted"]]
    miss = [(p, r["epochs"]) for p, r in zip(ps, recs, strict=True) if not r["fitted"]]
    ax.plot(ps, [r["epochs"] for r in recs], "-", color="C0")
    if fit:
        ax.plot([p for p, _ in fit], [e for _, e in fit], "o", color="C0",
                label="reached 100% train accuracy")
    if miss:
        ax.plot([p for p, _ in miss], [e for _, e in miss], "o", mfc="none", color="C3",
                label="not fitted by the last epoch")
    ax.set_xlabel("label corruption p")
    ax.set_ylabel("epochs to fit")
    ax.set_title("(b) convergence slowdown")
    twin = ax.secondary_yaxis("right", functions=_steps_axis(recs))
    twin.set_ylabel("steps")
    ax.legend(fontsize=8)


def _steps_axis(recs):
    # Every epoch has the same number of steps (ceil(n / batch)).
    per = recs[0]["steps"] / max(recs[0]["epochs"], 1)
    return (lambda e: e * per, lambda s: s / per)


def _panel_c(ax, results):
    ps = [p for p, _ in results["levels"]]
    errs = [r["test_error"] for _, r in results["levels"]]
    ax.plot(ps, [100 * e for e in errs], "o-")
    k = results["levels"][0][1]["n_classes"]
    ax.axhline(100 * (1 - 1 / k), ls=":", color="gray", label=f"chance ({k} classes)")
    ax.set_xlabel("label corruption p")
    ax.set_ylabel("test error (%)")
    ax.set_title("(c) generalization error growth")
    ax.legend(fontsize=8)

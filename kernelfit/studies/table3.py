"""The paper's Table 3: exact kernel interpolation on MNIST and CIFAR-10, row by row.

Each row is one :func:`~kernelfit.pipeline.run.run`, its hyper-parameters
chosen first on a validation split carved from the training set
(:mod:`kernelfit.pipeline.select`; the test set is never looked at before
the final fit). A row's record goes through
:class:`~kernelfit.pipeline.results.ResultStore` the moment it finishes,
keyed by the settings that change its numbers (and the data's fingerprint and
kernelfit's version) only, so an interrupted reproduction resumes where it
stopped and ``--quiet`` reuses finished rows.

What is selected, per row (all on a stratified 20% hold-out of a training
subset of at most ``n_select`` images, seed = the run's seed; a choice at the
end of its grid walks up to :data:`EXTEND` grid steps further out):

- raw-pixel rows: the preprocessing (pixels scaled to [0, 1], or that plus
  Appendix A's per-image whitening) and the Gaussian bandwidth;
- feature rows: the bandwidth on the features;
- the l2 row: the bandwidth and lambda (> 0, a log grid).

Streamed random-conv rows select on at most :data:`STREAM_SELECT_MAX`
training images (their features are 8 x filters wide), with the features
standardized as the streamed Gram builder standardizes them.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kernelfit.errors import InputError, SubsetWarning
from kernelfit.options import Options
from kernelfit.params import whole
from kernelfit.pipeline.results import ResultStore, result_settings, with_data
from kernelfit.pipeline.run import RunConfig, prepare, run
from kernelfit.pipeline.select import Selection, select
from kernelfit.pipeline.select_grid import LAM_FACTORS, SIGMA_FACTORS, default_grid

# Training images a selection fits and validates on (hold-out 20%: 8,000 / 2,000).
N_SELECT = 10_000
# Streamed rows materialize n x 8F features for the selection: at F = 4,096, 2,000
# images are 262 MB in float32.
STREAM_SELECT_MAX = 2_000
VAL_FRACTION = 0.2
# A choice at the end of its grid walks out this many more grid steps (select's extend).
EXTEND = 2
# The l2 row's lambda grid: LAM_FACTORS without 0 (that would be the row above).
L2_LAM_FACTORS = tuple(f for f in LAM_FACTORS if f > 0)
PAPER_FILTERS = 32_000


@dataclass(frozen=True)
class Row:
    """One line of the paper's table and how this project runs it.

    ``preprocessings`` are the candidates the selection chooses among (the
    first is the one used with ``select=False``); ``select_lam`` grids lambda
    too (the l2 row).
    """

    key: str
    paper_error: float          # the paper's test error, as a fraction
    paper_setting: str
    config: RunConfig = field(hash=False, compare=False)
    preprocessings: tuple = ("scale",)
    select_lam: bool = False


def rows(filters: int = 4096, lam: float = 1e-3) -> list[Row]:
    """The rows, with the settings this project uses for each.

    Fixed settings (``select=False``): MNIST raw sigma = 5 on [0, 1] pixels
    (the paper's); elsewhere the scale rule 1 / (d Var) on the features and
    ``lam`` for the l2 row. CIFAR-10 randconv: the paper used 32,000 random
    filters; ``filters`` defaults to what a 2-core machine finishes in
    reasonable time, and the row's label says which was used.
    """
    mnist = RunConfig(dataset="mnist", kernel="gaussian")
    cifar = RunConfig(dataset="cifar10", kernel="gaussian")
    # Streamed, hence standardized per feature, at every F: one pipeline for the F-curve.
    conv = replace(cifar, features="randconv", feature_params={"n_filters": filters},
                   stream=True)
    raw_choices = ("scale", "scale,whiten")
    return [
        Row("mnist-raw", 0.012, "none", replace(mnist, sigma=5.0), raw_choices),
        Row("mnist-scattering", 0.006, "Gabor wavelet transform (here: scattering J=2)",
            replace(mnist, features="scattering")),
        Row("mnist-gabor", 0.006, "Gabor filters", replace(mnist, features="gabor")),
        Row("cifar10-raw", 0.46, "none (Gaussian kernel on pixels)", cifar, raw_choices),
        Row("cifar10-randconv", 0.17, "random conv-net, 32,000 filters", conv),
        Row("cifar10-randconv-l2", 0.15, "random conv-net + l2 regularization",
            replace(conv, lam=lam), select_lam=True),
    ]


# -- selection ---------------------------------------------------------------

def _selection_features(config: RunConfig, n: int):
    """Training features and labels of a stratified n-image training subset (no test data)."""
    from kernelfit.features import make_features

    # n_test=1: prepare() always loads a test split; the selection never reads it. No
    # subset notice: the user's own subsets are checked once, with the row (reproduce).
    data = prepare(replace(config, n_train=n, n_test=1), asked=())
    fmap = make_features(config.features, seed=config.seed, **config.feature_params)
    fmap.fit(data.train_images)
    X = fmap.transform(data.train_images, progress=config.options.progress)
    if config.stream:
        # As the streamed Gram builder does: each column to zero mean, unit variance.
        from kernelfit.engine.gram.stream import standardize_chunk
        X, _ = standardize_chunk(X, X[:0], np.float32)
    return X, data.train_labels


def choose(row: Row, config: RunConfig, *, n_select: int = N_SELECT,
           val_fraction: float = VAL_FRACTION, log=print) -> tuple[RunConfig, dict]:
    """Select ``row``'s settings on training data only; returns the config to run and the record.

    Each preprocessing candidate gets its own bandwidth grid (the median
    pairwise distance of its features times
    :data:`~kernelfit.pipeline.select_grid.SIGMA_FACTORS`); the candidate with
    the lowest validation error wins, ties to the earlier (simpler) one.
    """
    t0 = time.perf_counter()
    cap = min(STREAM_SELECT_MAX, n_select) if config.stream else n_select
    n = cap if config.n_train is None else min(cap, config.n_train)
    candidates: dict[str, Selection] = {}
    for pre in row.preprocessings:
        cfg = replace(config, preprocessing=pre)
        X, y = _selection_features(cfg, n)
        grid = default_grid(X, kernel=config.kernel, seed=config.seed, lam=config.lam)
        if row.select_lam:
            grid["lam"] = list(L2_LAM_FACTORS)
        sel = select(X, y, kernel=config.kernel, grid=grid, val_fraction=val_fraction,
                     seed=config.seed, options=config.options.replace(progress=False),
                     progress=config.options.progress, extend=EXTEND)
        log(f"  {row.key} [{pre}]: {sel.summary()}")
        candidates[pre] = sel
        del X
    best_pre = min(candidates, key=lambda p: candidates[p].best["val_error"])
    best = candidates[best_pre]
    chosen = {"preprocessing": best_pre, **best.params}
    record = {"chosen": chosen, "val_error": best.best["val_error"], "rule": best.rule,
              "n_select": n, "n_fit": best.n_fit, "n_val": best.n_val,
              "seconds": time.perf_counter() - t0,
              "candidates": {p: s.as_dict() for p, s in candidates.items()}}
    return replace(config, **chosen), record


def _selection_spec(row: Row, config: RunConfig, select_on: bool, n_select: int,
                    val_fraction: float) -> dict | None:
    """The selection settings that change a row's result (part of its resume key)."""
    if not select_on:
        return None
    return {"preprocessings": list(row.preprocessings), "sigma_factors": list(SIGMA_FACTORS),
            "lam_factors": list(L2_LAM_FACTORS) if row.select_lam else None, "extend": EXTEND,
            "n_select": min(STREAM_SELECT_MAX, n_select) if config.stream else n_select,
            "val_fraction": val_fraction}


# -- the table ---------------------------------------------------------------

def _check_classes(config: RunConfig) -> list[str]:
    """Warnings for a train or test subset that lacks some of the data set's classes."""
    import warnings

    from kernelfit.data import load_split
    from kernelfit.data.dataset import missing_classes

    with warnings.catch_warnings():      # said once, with the row, by the caller
        warnings.simplefilter("ignore", SubsetWarning)
        splits = load_split(config.dataset, n_train=config.n_train, n_test=config.n_test,
                            seed=config.seed, data_home=config.data_home, progress=False)
    return [p for p in map(missing_classes, splits) if p]


def reproduce(out_dir, *, keys=None, n_train=None, n_test=None, filters=4096, lam=1e-3,
              options: Options | None = None, data_home=None, select_settings: bool = True,
              n_select: int = N_SELECT, val_fraction: float = VAL_FRACTION,
              log=print) -> list[dict]:
    """Run the selected rows (all by default), resuming finished ones; returns result dicts.

    Parameters
    ----------
    out_dir : path
        One ``ROW.json`` per row (a :class:`ResultStore`).
    keys : list of str, optional
        Row keys; None runs every row.
    n_train, n_test : int, optional
        Subset sizes (None: the whole split).
    filters, lam : randconv filters and the l2 row's fixed lambda (``select_settings=False``).
    select_settings : bool
        Choose each row's settings on a validation split of the training set
        (True), or run the fixed settings of :func:`rows`.
    n_select, val_fraction : selection subset size and hold-out share.
    log : callable
        Receives progress lines (``print`` by default).
    """
    whole("n_select", n_select, 20)
    out_dir = Path(out_dir)
    store = ResultStore(out_dir)
    table = rows(filters=filters, lam=lam)
    known = [r.key for r in table]
    if keys:
        unknown = sorted(set(keys) - set(known))
        if unknown:
            raise InputError(f"unknown Table 3 rows {unknown}; choose from {', '.join(known)}")
        table = [r for r in table if r.key in keys]
    results = []
    for row in table:
        config = replace(row.config, n_train=n_train, n_test=n_test, data_home=data_home,
                         options=options or Options())
        settings = with_data({**result_settings(config),
                              "selection": _selection_spec(row, config, select_settings,
                                                           n_select, val_fraction)},
                             config.dataset, config.data_home)
        saved = store.load(row.key, settings, log=log)
        if saved is not None:
            log(f"{row.key}: reusing {store.path(row.key)} (same settings)")
            results.append(saved)
            continue
        problems = _check_classes(config)
        for msg in problems:
            # Shown even with --quiet; the row's record and table keep it too.
            warnings.warn(f"{row.key}: {msg}", UserWarning, stacklevel=2)
        selection = None
        if select_settings:
            log(f"{row.key}: selecting settings on a validation split of the training set")
            config, selection = choose(row, config, n_select=n_select,
                                       val_fraction=val_fraction, log=log)
        log(f"{row.key}: running ({_describe(config)})")
        record = run(config)
        record.selection = selection
        payload = {"row": row.key, "paper_error": row.paper_error,
                   "paper_setting": row.paper_setting, "ran": _describe(config),
                   "warnings": problems, "record": record.to_dict()}
        path = store.save(row.key, settings, payload)
        log(f"{row.key}: test error {100 * record.test_error:.2f}% (paper "
            f"{100 * row.paper_error:.1f}%), record {path}"
            if record.test_error is not None else f"{row.key}: record {path}")
        results.append({"settings": store.key(settings), **payload})
    return results


def _describe(config: RunConfig) -> str:
    """What actually runs: preprocessing, front end (with its size), kernel scale, lambda."""
    parts = [config.preprocessing]
    if config.features != "raw":
        f = config.features
        n_filters = config.feature_params.get("n_filters")
        if n_filters is not None:
            f += f" {n_filters:,} filters"
            if n_filters != PAPER_FILTERS:
                f += f" (paper {PAPER_FILTERS:,})"
        parts.append(f + (", streamed K" if config.stream else ""))
    if config.sigma is not None:
        parts.append(f"sigma {config.sigma:.4g}")
    elif config.gamma is not None:
        parts.append(f"gamma {config.gamma:.4g}")
    else:
        parts.append("scale rule 1/(d Var)")
    if config.lam:
        parts.append(f"lambda {config.lam:.3g}")
    return "; ".join(parts)


def seconds_text(seconds: float) -> str:
    """A duration with sensible precision: 0.042 s, 3.1 s, 47 s, 12 min 5 s."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 10:
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(round(seconds % 60))} s"


def _run_seconds(rec: dict) -> float:
    return float(sum(v for v in rec["timings"].values() if isinstance(v, (int, float))))


def _validation_text(sel: dict | None) -> str:
    """The chosen point's validation error and the training images it was fitted on."""
    if not sel:
        return "-"
    return f"{100 * sel['val_error']:.2f}% (n={sel['n_fit']:,})"


def markdown(results: list[dict]) -> str:
    """Paper vs measured, one line per row, labelled with what actually ran."""
    lines = ["| row | paper's pre-processing | what ran | n_train / n_test | feature dim "
             "| test error (paper) | test error (kernelfit) | validation error (fit on) "
             "| train error | norm | selection time | run time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rec = r["record"]
        sel = rec.get("selection")
        test = "-" if rec["test_error"] is None else f"{100 * rec['test_error']:.2f}%"
        lines.append(
            f"| {r['row']} | {r['paper_setting']} | {r.get('ran', '-')} | "
            f"{rec['n_train']:,} / {rec['n_test']:,} | {rec['feature_dim'] or '-'} | "
            f"{100 * r['paper_error']:.1f}% | {test} | "
            f"{_validation_text(sel)} | "
            f"{100 * rec['train_error']:.2f}% | {rec['norm']:.4g} | "
            f"{'-' if not sel else seconds_text(sel['seconds'])} | "
            f"{seconds_text(_run_seconds(rec))} |")
    notes = [f"- {r['row']}: {w}" for r in results for w in r.get("warnings", [])]
    notes += [f"- {r['row']}: {w}" for r in results for w in r["record"].get("warnings", [])]
    notes += [f"- {r['row']} ({pre}): {n}" for r in results
              for pre, c in ((r["record"].get("selection") or {}).get("candidates") or {}).items()
              if pre == r["record"]["selection"]["chosen"]["preprocessing"]
              for n in c.get("notes", [])]
    rules = sorted({r["record"]["selection"]["rule"] for r in results
                    if r["record"].get("selection")})
    out = "\n".join(lines) + "\n"
    if rules:
        out += ("\nSettings chosen on a validation split carved from each row's training data "
                f"({'; '.join(rules)}); the test set is used once, by the final fit. The "
                "validation error is that of a fit on the selection subset (n above), so it "
                "runs above a full-size row's test error.\n")
    if notes:
        out += "\nWarnings:\n" + "\n".join(notes) + "\n"
    return out


def _plot_label(r: dict) -> str:
    rec = r["record"]
    extra = rec.get("feature_params", {}).get("n_filters")
    return (f"{r['row']}\n(n={rec['n_train']:,}"
            + (f", {extra:,} filters)" if extra else ")"))


def plot(results: list[dict], path) -> Path:
    """Paper vs kernelfit test error per row, with the interpolant's norm beside it (PNG)."""
    from kernelfit.plots import pyplot, save_figure

    plt = pyplot()
    keys = [r["row"] for r in results]
    paper = [100 * r["paper_error"] for r in results]
    ours = [np.nan if r["record"]["test_error"] is None else 100 * r["record"]["test_error"]
            for r in results]
    norms = [r["record"]["norm"] for r in results]
    y = np.arange(len(keys))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.7 * len(keys) + 2.0), sharey=True,
                                   gridspec_kw={"width_ratios": [3, 2]})
    h = 0.38
    bars = (ax1.barh(y - h / 2, paper, h, label="paper", color="#999999"),
            ax1.barh(y + h / 2, ours, h, label="kernelfit", color="#1f77b4"))
    for off, vals in ((-h / 2, paper), (h / 2, ours)):
        for yi, v in zip(y, vals, strict=True):
            if np.isfinite(v):
                ax1.text(v, yi + off, f" {v:.1f}%", va="center", fontsize=8)
    ax1.set_yticks(y, [_plot_label(r) for r in results], fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlabel("test error (%)")
    # Room right of the longest bar for its label and the legend.
    ax1.set_xlim(0, max([v for v in paper + ours if np.isfinite(v)] + [1]) * 1.5)
    ax1.legend(handles=[bars[0], bars[1]], loc="lower right", fontsize=8, framealpha=0.9)
    ax1.set_title("Test error: paper vs kernelfit")
    ax2.barh(y, norms, 0.5, color="#ff7f0e")
    for yi, v in zip(y, norms, strict=True):
        ax2.text(v, yi, f" {v:,.4g}", va="center", fontsize=8)
    finite = [v for v in norms if np.isfinite(v) and v > 0]
    if finite and max(finite) / min(finite) > 30:
        # Norms of different front ends span decades: a log axis from below the smallest.
        ax2.set_xscale("log")
        ax2.set_xlim(min(finite) / 3, max(finite) * 8)
        ax2.set_xlabel("RKHS norm sqrt(tr(alpha^T K alpha)), log scale")
    else:
        ax2.set_xlim(0, max(finite + [1]) * 1.3)
        ax2.set_xlabel("RKHS norm sqrt(tr(alpha^T K alpha))")
    ax2.set_title("Norm of the interpolant (kernelfit)")
    selected = all(r["record"].get("selection") for r in results)
    fig.suptitle("Table 3: exact kernel interpolation "
                 + ("(settings chosen on validation data carved from the training sets)"
                    if selected else "(fixed settings on some rows)"), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)

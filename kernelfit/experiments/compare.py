"""The kernel interpolant beside SGD-trained networks, on the same data and split.

Both sides see the same images: the same seeded stratified subset
(``load_split``), the same randomization test, and the same inputs (pixels /
255, centre crop, per-image whitening; the networks' pipeline of appendix A,
given to the kernel run as its preprocessing). The interpolant is one
:func:`~.run.run`; each network one :func:`~.sgd.train.train_net`. Every
side is a point in one :class:`ResultStore`, so a rerun reuses them.

``network_kernels`` adds the networks' own kernels beside them: the NNGP and
NTK interpolants of a fully connected ReLU network of a given depth
(:mod:`kernelfit.network_kernels`), the infinite-width limits of the MLPs
(depth 1: MLP 1x512, depth 3: MLP 3x512; Lee et al. ICLR 2018, Jacot et al.
NeurIPS 2018), on the same inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..atomic import write_text_atomic
from ..errors import InputError
from ..kernels import NETWORK_KERNELS
from ..plots import log_ticks, plain_log_ticks, pyplot, save_figure
from .results import ResultStore, result_settings, settings_key, with_data
from .run import RunConfig, run
from .sgd.nets import MODELS
from .sgd.train import CROP, NetConfig, train_net


@dataclass
class CompareConfig:
    """The shared data, the kernel run and the networks to put beside it."""

    dataset: str = "digits"
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0
    randomize: str = "none"
    models: tuple = ("mlp1x512",)
    network_kernels: tuple = ()      # ("nngp", 1), ("ntk", 3), ... (see parse_network_kernels)
    kernel: RunConfig = field(default_factory=RunConfig)   # its data fields are overwritten
    net: NetConfig = field(default_factory=NetConfig)      # its data fields and model too


def _image_size(dataset: str) -> int:
    from ..data import DATASETS

    if dataset not in DATASETS:
        raise InputError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    return min(DATASETS[dataset].image_shape[:2])


def parse_network_kernels(text: str) -> tuple:
    """``"nngp:1,ntk:1,nngp:3"`` as ``(("nngp", 1), ("ntk", 1), ("nngp", 3))``."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, depth = item.partition(":")
        if name not in NETWORK_KERNELS or not sep or not depth.strip().isdigit():
            raise InputError(f"network kernels are NAME:DEPTH with NAME one of "
                             f"{', '.join(NETWORK_KERNELS)} and DEPTH >= 0 (e.g. "
                             f"nngp:1,ntk:3), got {item!r}")
        out.append((name, int(depth)))
    if len(set(out)) != len(out):
        raise InputError(f"network kernels listed twice in {text!r}")
    return tuple(out)


def network_kernel_config(kconf: RunConfig, name: str, depth: int) -> RunConfig:
    """The compared kernel run with one network kernel instead (no bandwidth: it has none)."""
    if name not in NETWORK_KERNELS:
        raise InputError(f"network kernel {name!r}: choose one of {', '.join(NETWORK_KERNELS)}")
    return replace(kconf, kernel=name, depth=depth, sigma=None, gamma=None)


def kernel_config(config: CompareConfig, crop: int | None = None) -> RunConfig:
    """The kernel run on the networks' data and inputs."""
    crop = min(CROP, _image_size(config.dataset)) if crop is None else crop
    return replace(config.kernel, dataset=config.dataset, n_train=config.n_train,
                   n_test=config.n_test, seed=config.seed, randomize=config.randomize,
                   preprocessing=f"scale,crop:{crop},whiten")


def compare(config: CompareConfig, out_dir) -> dict:
    """Run (or reuse) the interpolant and each network; write the table and the figure.

    Returns
    -------
    dict
        ``rows`` (one dict per method), ``table`` (Markdown), ``table_path``, ``figure``.
    """
    models = tuple(config.models)
    if not models or any(m not in MODELS for m in models):
        raise InputError(f"models must be a non-empty list from {', '.join(MODELS)}, "
                         f"got {list(models)}")
    out_dir = Path(out_dir)
    nets = [replace(config.net, model=m, dataset=config.dataset, n_train=config.n_train,
                    n_test=config.n_test, seed=config.seed, randomize=config.randomize)
            for m in models]
    extra = [network_kernel_config(RunConfig(), name, depth)    # checked before any work
             for name, depth in config.network_kernels]
    net_records = [train_net(c, out_dir)[0] for c in nets]   # validates the shared fields
    kconf = kernel_config(config, crop=int(net_records[0]["input_shape"][0]))
    rows = [kernel_row(kernel_record(kconf, out_dir))]
    rows += [kernel_row(kernel_record(network_kernel_config(kconf, e.kernel, e.depth),
                                      out_dir)) for e in extra]
    rows += [net_row(r) for r in net_records]
    text = markdown(rows)
    # One table and figure per randomization, so runs sharing a store keep theirs.
    stem = "compare-" + rows[0]["randomization"].replace(":", "")
    table_path = write_text_atomic(out_dir / f"{stem}.md", text + "\n")
    figure = draw(rows, out_dir / f"{stem}.png")
    return {"rows": rows, "table": text, "table_path": table_path, "figure": figure}


def kernel_record(kconf: RunConfig, out_dir) -> dict:
    """The interpolant's record, reused from the store when its settings and data match
    (a stale record is recomputed with a line saying why, unless progress is off)."""
    store = ResultStore(out_dir)
    settings = with_data(result_settings(kconf), kconf.dataset, kconf.data_home)
    name = f"kernel-{kconf.dataset}-{settings_key(settings)}"
    log = print if kconf.options.progress else (lambda *_: None)
    return store.load_or_compute(name, settings,
                                 lambda: {"kind": "kernel", **run(kconf).to_dict()},
                                 log=log, progress=False)


def kernel_row(r: dict) -> dict:
    seconds = sum(v for v in r["timings"].values() if isinstance(v, (int, float)))
    k = r["kernel"]
    label = k.get("name", "kernel") + (f", depth {k['depth']}" if "depth" in k else "")
    return {"method": f"kernel interpolant ({label})",
            "train_error": r["train_error"], "test_error": r["test_error"], "norm": r["norm"],
            "seconds": seconds, "size": f"{r['n_train']:,} coefficients per class",
            "detail": f"relative residual {r['relative_residual']:.2g}",
            "dataset": r["dataset"], "n_train": r["n_train"], "n_test": r["n_test"],
            "randomization": r["randomization"]}


def net_row(r: dict) -> dict:
    fit = (f"fitted in {r['epochs_to_fit']} epochs" if r["fitted"]
           else f"not fitted in {r['epochs']} epochs")
    return {"method": f"{r['model']} (SGD)", "train_error": r["train_error"],
            "test_error": r["test_error"], "norm": None, "seconds": r["seconds"],
            "size": f"{r['n_params']:,} parameters", "detail": f"{fit}, {r['steps']:,} steps",
            "dataset": r["dataset"], "n_train": r["n_train"], "n_test": r["n_test"],
            "randomization": r["randomization"]}


def markdown(rows) -> str:
    """The side-by-side table."""
    first = rows[0]
    head = (f"{first['dataset']}, {first['n_train']:,} train / {first['n_test']:,} test, "
            f"randomization {first['randomization']}\n\n")
    lines = ["| method | train error | test error | norm (kernel) | time (s) | size | notes |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        test = "-" if r["test_error"] is None else f"{100 * r['test_error']:.2f}%"
        norm = "-" if r["norm"] is None else f"{r['norm']:.4g}"
        lines.append(f"| {r['method']} | {100 * r['train_error']:.2f}% | {test} | {norm} | "
                     f"{r['seconds']:.1f} | {r['size']} | {r['detail']} |")
    return head + "\n".join(lines)


def figure(rows):
    """Train and test error per method (bars, in %), time to fit per method (points, log).

    Times span decades (seconds for the interpolant, hours for a network), so
    they are points on a log axis with plain labels (bars on a log axis have
    no baseline to be read against).
    """
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["method"] for r in rows]
    xs = list(range(len(rows)))
    for shift, key in ((-0.2, "train"), (0.2, "test")):
        # no test error (none measured) is no bar, not a bar at 0
        values = [float("nan") if r[f"{key}_error"] is None else 100 * r[f"{key}_error"]
                  for r in rows]
        bars = ax.bar([x + shift for x in xs], values, 0.4, label=f"{key} error")
        ax.bar_label(bars, [f"{v:.1f}" for v in values], fontsize=7)   # NaN: no label
        for x, v in zip(xs, values, strict=True):
            if math.isnan(v):
                ax.annotate("n/a", (x + shift, 0), textcoords="offset points", xytext=(0, 2),
                            ha="center", va="bottom", fontsize=7, annotation_clip=False)
    ax.set_xticks(xs, names, rotation=20, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(rows) - 0.4)      # room for a missing (NaN) bar's label too
    ax.set_ylabel("error (%)")
    first = rows[0]
    rand = first["randomization"]
    ax.set_title(f"{first['dataset']}: {first['n_train']:,} train / {first['n_test']:,} test "
                 f"images; randomization: {'none (true labels)' if rand == 'none' else rand}",
                 fontsize=10)
    ax.legend(fontsize=8)
    seconds = [max(r["seconds"], 1e-3) for r in rows]
    for x, s in zip(xs, seconds, strict=True):
        bx.plot([x], [s], "o", ms=8, color=f"C{x}")
        bx.annotate(_seconds(s), (x, s), textcoords="offset points", xytext=(9, -3),
                    fontsize=8)
    bx.set_yscale("log")
    ticks = log_ticks(min(seconds), max(seconds))
    plain_log_ticks(bx.yaxis, "{:g} s", ticks=ticks)
    bx.set_ylim(ticks[0] / 1.2, ticks[-1] * 1.2)
    bx.set_xticks(xs, names, rotation=20, ha="right", fontsize=8)
    bx.set_xlim(-0.5, len(rows) - 0.5)
    bx.set_ylabel("time to fit (s, log scale)")
    bx.set_title("time to fit", fontsize=10)
    fig.tight_layout()
    return fig


def _seconds(s: float) -> str:
    """A time as it is read: 0.34 s, 35 s, 4,100 s (not 4.1e+03 s)."""
    return f"{s:.3g} s" if s < 1000 else f"{s:,.0f} s"


def draw(rows, path) -> Path:
    """:func:`figure` saved as a PNG at ``path``."""
    return save_figure(figure(rows), path)

"""The kernel interpolant beside SGD-trained networks, on the same data and split.

Both sides see the same images: the same seeded stratified subset
(``load_split``), the same randomization test, and the same inputs (pixels /
255, centre crop, per-image whitening; the networks' pipeline of appendix A,
given to the kernel run as its preprocessing). The interpolant is one
:func:`~.run.run`; each network one :func:`~.sgd.train.train_net`. Every
side is a point in one :class:`ResultStore`, so a rerun reuses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..atomic import write_text_atomic
from ..errors import InputError
from ..plots import pyplot, save_figure
from .results import ResultStore, result_settings, settings_key
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
    kernel: RunConfig = field(default_factory=RunConfig)   # its data fields are overwritten
    net: NetConfig = field(default_factory=NetConfig)      # its data fields and model too


def _image_size(dataset: str) -> int:
    from ..data import DATASETS

    if dataset not in DATASETS:
        raise InputError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    return min(DATASETS[dataset].image_shape[:2])


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
    net_records = [train_net(c, out_dir)[0] for c in nets]   # validates the shared fields
    kconf = kernel_config(config, crop=int(net_records[0]["input_shape"][0]))
    rows = [kernel_row(kernel_record(kconf, out_dir))]
    rows += [net_row(r) for r in net_records]
    text = markdown(rows)
    # One table and figure per randomization, so runs sharing a store keep theirs.
    stem = "compare-" + rows[0]["randomization"].replace(":", "")
    table_path = write_text_atomic(out_dir / f"{stem}.md", text + "\n")
    figure = draw(rows, out_dir / f"{stem}.png")
    return {"rows": rows, "table": text, "table_path": table_path, "figure": figure}


def kernel_record(kconf: RunConfig, out_dir) -> dict:
    """The interpolant's record, reused from the store when its settings match."""
    store = ResultStore(out_dir)
    settings = result_settings(kconf)
    name = f"kernel-{kconf.dataset}-{settings_key(settings)}"
    return store.load_or_compute(name, settings,
                                 lambda: {"kind": "kernel", **run(kconf).to_dict()},
                                 log=lambda _: None)


def kernel_row(r: dict) -> dict:
    seconds = sum(v for v in r["timings"].values() if isinstance(v, (int, float)))
    return {"method": f"kernel interpolant ({r['kernel'].get('name', 'kernel')})",
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


def draw(rows, path) -> Path:
    """Train and test error per method (bars), time per method (log scale)."""
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["method"] for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [100 * r["train_error"] for r in rows], 0.4, label="train")
    ax.bar([x + 0.2 for x in xs], [100 * (r["test_error"] or 0) for r in rows], 0.4,
           label="test")
    ax.set_xticks(list(xs), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("error (%)")
    ax.set_title(f"{rows[0]['dataset']}, n = {rows[0]['n_train']:,}, "
                 f"{rows[0]['randomization']}")
    ax.legend()
    bx.bar(list(xs), [max(r["seconds"], 1e-3) for r in rows], color="C2")
    bx.set_yscale("log")
    bx.set_xticks(list(xs), names, rotation=20, ha="right", fontsize=8)
    bx.set_ylabel("time (s)")
    bx.set_title("time to fit")
    fig.tight_layout()
    return save_figure(fig, path)

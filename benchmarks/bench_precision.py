"""Float32 at large n: the NNGP interpolant of CIFAR-10, float32 against refined to the exact K.

Lee et al. (2020, "Finite versus infinite neural networks: an empirical
study", arXiv 2007.15801) report that float32 limits the performance of
kernels past a critical dataset size, and compute their kernels in float64.
This measures the same thing with kernelfit's own tools: for each n, the
exact NNGP interpolant (lam = 0) is fitted twice on the same points,

* ``float32``: K and its Cholesky factor in float32, no refinement;
* ``exact``: the same float32 K and factor, then refinement steps whose float64
  residuals are taken against K recomputed in float64 from the points
  (``refine_against="exact"``); the answer then solves the exact system while
  memory stays float32,

and for both: test error, the relative residual against the exact K (one
float64 matrix-free pass made here, not the solver's own report: see
``bench_refine.exact_residual``), the norm, the refinement history and the
time. The data is the paper's CIFAR-10 preprocessing (pixels / 255, centre
crop 28 x 28, per-image whitening), a stratified subset of n training images
and the full 10,000 test images.

One JSON per n (``precision_<dataset>_<kernel>_depthL_n<N>_<machine>.json``), so
a killed study resumes at the first n not yet written; then a Markdown table
and a plot over every n written so far:

    python benchmarks/bench_precision.py --n 5000 10000 20000 50000
    python benchmarks/bench_precision.py --dataset digits --n 200 400 --n-test 300  # seconds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pcg import machine  # noqa: E402
from bench_refine import fit_variant  # noqa: E402

from kernelfit.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from kernelfit.engine.backend.device import machine_label  # noqa: E402

VARIANTS = ("float32", "exact")
PREPROCESSING = {"cifar10": "scale,crop:28,whiten", "mnist": "scale", "digits": "scale"}


def _data(dataset: str, n: int, n_test: int | None):
    from kernelfit.pipeline.run import RunConfig, prepare
    data = prepare(RunConfig(dataset=dataset, n_train=n, n_test=n_test,
                             preprocessing=PREPROCESSING[dataset]))
    f = lambda ims: np.ascontiguousarray(ims.reshape(len(ims), -1), np.float32)  # noqa: E731
    return (f(data.train_images), data.train_labels, f(data.test_images), data.test_labels,
            data.preprocessing)


def run_n(args, n: int, m: dict, path: Path) -> dict:
    Xtr, ytr, Xte, yte, pre = _data(args.dataset, n, args.n_test)
    kernel = {"kernel": args.kernel, "depth": args.depth}
    print(f"n = {n} ({args.dataset}, {args.kernel} depth {args.depth}, {pre})", flush=True)
    fits = {name: fit_variant(name, kernel, Xtr, ytr, Xte, yte, args.steps)
            for name in VARIANTS}
    rows = {name: row for name, (row, _) in fits.items()}
    # How far the float32 answer is from the exact system's: what the residual hides.
    a32, a_exact = fits["float32"][1], fits["exact"][1]
    rows["float32"]["alpha_rel_diff_vs_exact"] = float(np.linalg.norm(a32 - a_exact)
                                                       / np.linalg.norm(a_exact))
    doc = {"machine": m, "dataset": args.dataset, "n": len(Xtr), "n_test": len(Xte),
           "preprocessing": pre, "kernel": kernel, "steps": args.steps,
           "command": "python benchmarks/bench_precision.py " + " ".join(sys.argv[1:]),
           "variants": rows}
    write_json_atomic(path, doc)
    print(f"written {path}", flush=True)
    return doc


def table(docs: list[dict]) -> str:
    lines = ["| n | variant | test error | residual vs exact K | refinement (residual per step) "
             "| alpha off the refined one | norm | fit |",
             "|---|---|---|---|---|---|---|---|"]
    for doc in docs:
        for name, r in doc["variants"].items():
            hist = " -> ".join(f"{h:.1e}" for h in r["refine_history"]) or "-"
            lines.append(f"| {doc['n']:,} | {name} | {100 * r['test_error']:.2f}% "
                         f"| {r['residual_vs_exact_K_float64']:.1e} | {hist} "
                         f"| {r.get('alpha_rel_diff_vs_exact', 0):.1e} "
                         f"| {r['norm']:.4g} | {r['fit_s']:.0f} s |")
    return "\n".join(lines) + "\n"


def plot(docs: list[dict], path: Path, title: str) -> None:
    from kernelfit.plots import plain_log_ticks, pyplot, save_figure
    plt = pyplot()
    fig, (ax_err, ax_res) = plt.subplots(1, 2, figsize=(10, 4))
    ns = [d["n"] for d in docs]
    for name, marker in zip(VARIANTS, "os", strict=True):
        label = {"float32": "float32", "exact": "float32, refined against the exact K"}[name]
        ax_err.plot(ns, [100 * d["variants"][name]["test_error"] for d in docs],
                    marker=marker, label=label)
        ax_res.plot(ns, [d["variants"][name]["residual_vs_exact_K_float64"] for d in docs],
                    marker=marker, label=label)
    for ax in (ax_err, ax_res):
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis, "{:,.0f}", ns)
        ax.set_xlabel("training points n")
        ax.legend()
    ax_err.set_ylabel("test error (%)")
    ax_res.set_yscale("log")
    ax_res.set_ylabel("||K alpha - Y|| / ||Y||, K exact (float64)")
    fig.suptitle(title)
    save_figure(fig, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cifar10", choices=sorted(PREPROCESSING))
    ap.add_argument("--n", type=int, nargs="+", default=[5000, 10000, 20000, 50000])
    ap.add_argument("--n-test", type=int, default=None, help="test images (default: all)")
    ap.add_argument("--kernel", default="nngp", choices=["nngp", "ntk"])
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3, help="refinement steps")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--figure", default=None, help="the plot (default: beside the table)")
    args = ap.parse_args(argv)
    if any(n < 2 for n in args.n):
        ap.error("--n: every size must be at least 2")

    m = machine()
    out = Path(args.out)
    stem = f"precision_{args.dataset}_{args.kernel}_depth{args.depth}"
    docs = []
    for n in sorted(set(args.n)):
        path = out / f"{stem}_n{n}_{machine_label()}.json"
        if path.exists():
            doc = json.loads(path.read_text())
            made = (doc["kernel"], doc["steps"], doc["n_test"] if args.n_test else None)
            asked = ({"kernel": args.kernel, "depth": args.depth}, args.steps, args.n_test)
            if made != asked:
                sys.exit(f"{path} was made with other settings ({made}, asked {asked}): "
                         "delete it or pass another --out")
            print(f"n = {n}: kept {path}")
        else:
            doc = run_n(args, n, m, path)
        docs.append(doc)
    title = (f"{args.dataset}, {args.kernel.upper()} depth {args.depth}: "
             "float32 against refinement to the exact K")
    write_text_atomic(out / f"{stem}_{machine_label()}.md", f"# {title}\n\n" + table(docs))
    plot(docs, Path(args.figure) if args.figure else out / f"{stem}_{machine_label()}.png",
         title)
    print(table(docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

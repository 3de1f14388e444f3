"""`kernelfit study NAME`: a follow-up study (label noise, double descent, learning curves)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kernelfit.errors import InputError
from kernelfit.pipeline.outputs import check_outputs
from kernelfit.studies.followups import STUDIES, study_module

EXAMPLES = """\
examples:
  kernelfit study interpolation-noise --small     # digits, under a minute
  kernelfit study double-descent --small --out results/dd
  kernelfit study learning-curves --dataset mnist --sizes 500,1000,2000,4000 --seeds 0,1,2
  kernelfit study double-descent --n-train 5000 --sizes 100,1000,4000,5000,6000,20000

studies (each a preset over `kernelfit sweep`, resumable: rerun to reuse finished points):
  interpolation-noise  test error of interpolating / ridge / early-stopped classifiers
                       against label noise, the interpolant's norm against n, CG
                       iterations and SGD epochs (`sgd linear`) to fit true and random
                       labels (Belkin, Ma & Mandal 2018)
  double-descent       minimum-norm fits on N random Fourier features across N = n, and
                       the exact Gaussian interpolant (Belkin, Hsu, Ma & Mandal 2019)
  learning-curves      test error against n, fitted exponent beta over seeds
                       (Spigler, Geiger & Wyart 2019)

outputs (in --out): one folder of sweep records per part, NAME.csv, NAME.md (each figure
  beside the published one) and the PNG plots.
"""


def _ints(text: str) -> tuple:
    try:
        return tuple(int(v.replace("_", "")) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers joined by commas, got {text!r}") from None


def register(sub) -> None:
    from kernelfit.cli import HelpFormatter

    p = sub.add_parser("study", help="the follow-up studies: label noise, double descent, "
                                     "learning curves",
                       description="Run one of the studies that followed Zhang et al.'s "
                                   "Section 5, at the paper's setting (scaled to this "
                                   "machine) or --small, and write its records, CSV, "
                                   "Markdown table (beside the published figures) and plots.",
                       epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("name", choices=tuple(STUDIES), help="the study")
    p.add_argument("--small", action="store_true",
                   help="the CI size: digits, a few hundred points, under a minute")
    p.add_argument("--out", default=None, help="folder (default: results/study-NAME[-small])")
    p.add_argument("--dataset", action="append", default=None, metavar="NAME",
                   help="dataset (repeatable where the study takes several)")
    p.add_argument("--n-train", type=int, default=None, metavar="N",
                   help="training points (noise, double descent)")
    p.add_argument("--n-test", type=int, default=None, metavar="N", help="test points")
    p.add_argument("--sizes", type=_ints, default=None, metavar="A,B,...",
                   help="the grid: n for learning-curves and the noise study's norm part, "
                        "N (features) for double-descent")
    p.add_argument("--seeds", type=_ints, default=None, metavar="S1,S2,...",
                   help="seeds (double descent, learning curves)")
    p.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True,
                   help="draw the PNG plots (needs the plots extra)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=main)


def overrides(args) -> dict:
    """The study settings given on the command line, named as the config class names them."""
    kw = {}
    if args.dataset:
        if args.name == "double-descent":
            if len(args.dataset) != 1:
                raise InputError("double-descent takes one --dataset")
            kw["dataset"] = args.dataset[0]
        else:
            kw["datasets"] = tuple(args.dataset)
    if args.n_train is not None:
        if args.name == "learning-curves":
            raise InputError("learning-curves takes its sizes from --sizes, not --n-train")
        kw["n_train"] = args.n_train
    if args.n_test is not None:
        kw["n_test"] = args.n_test
    if args.sizes is not None:
        kw[{"interpolation-noise": "norm_sizes", "double-descent": "n_features",
            "learning-curves": "sizes"}[args.name]] = args.sizes
    if args.seeds is not None:
        if args.name == "interpolation-noise":
            if len(args.seeds) != 1:
                raise InputError("interpolation-noise takes one seed")
            kw["seed"] = args.seeds[0]
        else:
            kw["seeds"] = args.seeds
    return kw


def main(args) -> int:
    log = (lambda *_: None) if args.quiet else print
    mod, config_cls = study_module(args.name)
    kw = overrides(args)
    study = config_cls.small(**kw) if args.small else config_cls.full(**kw)
    out = Path(args.out or f"results/study-{args.name}" + ("-small" if args.small else ""))
    datasets = getattr(study, "datasets", None) or (study.dataset,)
    check_outputs({}, dirs={"--out": out}, datasets=list(datasets))
    result = mod.run_study(study, out, plot=args.plot, log=log)
    print(Path(result.files["markdown"]).read_text(), end="")
    for line in result.summary:
        print(line)
    for name, path in result.files.items():
        log(f"{name}: {path}")
    for f in result.failed:
        print(f"kernelfit: point {f}", file=sys.stderr)
    return 1 if result.failed else 0

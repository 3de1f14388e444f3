"""`kernelfit sgd width`: how far a trained ReLU network is from its NTK linearization, by width."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from kernelfit.cli.argtypes import int_list, nonnegative_int, positive_float, positive_int

EPILOG = """\
examples:
  # seconds: the embedded digits, widths 64-4,096, 3 seeds, 8 steps / epochs
  kernelfit sgd width --small --out results/sgd-width-small

  # the full study: MNIST n = 1,000, widths 64-16,384, 3 seeds, 32 steps / epochs
  kernelfit sgd width --n-train 1000 --n-test 1000 --epochs 32 --out results/sgd-width

Each width is trained from its random start (NTK parameterization, stax's
Dense(w, W_std=sqrt 2) -> Relu -> Dense(classes)) by full-batch gradient
descent and by SGD on 1/2 sum ||f(x_i) - y_i||^2, with the step eta =
--lr-factor / lambda_max(Theta) (stable below 2 / lambda_max), and compared on
the test set with its linearization f_0 + Theta(x, X) Theta^-1 (I - (I - eta
Theta)^t) (y - f_0(X)) from the same start (for SGD: the kernel model on the
same batches). Theta is the infinite-width NTK. One JSON record per (width,
seed) in --out (a rerun reuses the finished ones); the summary (JSON and
Markdown, with the command and the machine) and the plot go there too.
"""

#: Options that default to the preset (--small or the full study) when not given.
PRESET_FIELDS = ("dataset", "n_train", "n_test", "widths", "seeds", "epochs", "ntk_points")


def register(group) -> None:
    p = group.add_parser(
        "width", help="distance between trained ReLU networks and their NTK linearization "
                      "vs width",
        description="Train one-hidden-layer ReLU networks of growing width by gradient "
                    "descent and SGD and measure how far their test outputs are from the NTK's "
                    "closed-form linearized prediction at the same time (Lee et al., NeurIPS "
                    "2019: it shrinks like width^-1/2).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="the CI / README size: digits, n = 200, "
                   "widths 64,256,1024,4096, 8 steps (other options still apply)")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default=None, help="mnist (full study), digits (--small), "
                   "cifar10; pixels scaled to [0, 1]")
    d.add_argument("--n-train", type=positive_int, default=None, help="training images "
                   "(default: 1000; --small 200)")
    d.add_argument("--n-test", type=positive_int, default=None, help="test images (default: "
                   "1000; --small 200)")
    d.add_argument("--data-seed", type=nonnegative_int, default=0, help="which subset of the data")
    d.add_argument("--data-home", default=None, help="dataset cache")
    n = p.add_argument_group("networks and training")
    n.add_argument("--widths", type=int_list(1), default=None, metavar="W,W,...",
                   help="hidden widths (default: 64,128,...,16384; --small 64,256,1024,4096)")
    n.add_argument("--seeds", type=int_list(0), default=None, metavar="S,S,...",
                   help="initialization seeds (default: 0,1,2)")
    n.add_argument("--optimizers", default="gd,sgd", help="gd and/or sgd, comma-separated")
    n.add_argument("--epochs", type=positive_int, default=None, help="gradient-descent steps "
                   "and SGD epochs (default: 32; --small 8)")
    n.add_argument("--times", type=int_list(0), default=None, metavar="T,T,...",
                   help="when to measure (default: 0, 1, 2, 4, ... up to --epochs)")
    n.add_argument("--lr-factor", type=positive_float, default=1.0,
                   help="eta = FACTOR / lambda_max(Theta); must be < 2")
    n.add_argument("--lr", type=positive_float, default=None, help="eta itself (instead of "
                   "--lr-factor); must be < 2 / lambda_max(Theta)")
    n.add_argument("--batch-size", type=positive_int, default=100, help="SGD batch")
    n.add_argument("--weight-std", type=positive_float, default=2 ** 0.5,
                   help="W_std of both Dense layers (the NTK's too)")
    n.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                   help="the networks' weights (distances are always float64)")
    n.add_argument("--ntk-points", type=positive_int, default=None, help="training images "
                   "the finite-width kernel is compared on (default: 200; --small 100)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="results/sgd-width", help="records, summary and plot")
    o.add_argument("--figure", default=None, metavar="PNG", help="where the plot goes "
                   "(default: OUT/width.png)")
    o.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=main)


def study_from_args(args):
    """The :class:`WidthStudy` the options ask for (preset, then explicit options), validated."""
    from kernelfit.studies.sgd.width import SMALL, WidthStudy

    preset = SMALL if args.small else {}
    names = {f.name for f in fields(WidthStudy)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values["optimizers"] = tuple(x.strip() for x in args.optimizers.split(","))
    study = WidthStudy(**{**{k: preset[k] for k in PRESET_FIELDS if k in preset}, **values})
    study.validate()
    return study


def main(args) -> int:
    from kernelfit.atomic import write_json_atomic, write_text_atomic
    from kernelfit.engine.backend.device import machine_label
    from kernelfit.pipeline.outputs import check_outputs
    from kernelfit.studies.sgd.width import run_width_study
    from kernelfit.studies.sgd.width_report import markdown, plot, summarize

    study = study_from_args(args)
    figure = Path(args.figure) if args.figure else Path(args.out) / "width.png"
    check_outputs({"--figure": str(figure)}, dirs={"--out": args.out},
                  datasets=[study.dataset], data_home=study.data_home)
    log = (lambda *_: None) if args.quiet else print
    records = run_width_study(study, args.out, log=log, progress=not args.quiet)
    summary = summarize(records)
    command = args.command_line
    text = markdown(summary)
    write_json_atomic(Path(args.out) / "width-summary.json",
                      {"command": command, "machine": machine_label(),
                       "study": {**study.settings(), "widths": list(study.widths),
                                 "seeds": list(study.seeds)}, **summary})
    write_text_atomic(Path(args.out) / "width-summary.md",
                      f"`{command}` on {machine_label()}\n\n{text}")
    f = summary["facts"]
    plot(summary, figure, title=f"One-hidden-layer ReLU networks vs their NTK linearization: "
         f"{study.dataset}, n = {f['n_train']}, eta = {f['eta_lambda_max']:.2g} / lambda_max, "
         f"seeds {len(summary['seeds'])}")
    print(text)
    print(f"summary: {Path(args.out) / 'width-summary.json'}; figure: {figure}")
    return 0

"""`kernelfit sweep`: a grid of runs (norm-versus-error studies), resumable, with CSV and plots."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from kernelfit.cli.argtypes import fraction, or_auto, positive_float
from kernelfit.cli.settings import RUN_SETTINGS, add_settings, options, run_config
from kernelfit.errors import InputError
from kernelfit.pipeline.outputs import check_outputs
from kernelfit.pipeline.run import RunConfig
from kernelfit.studies.sweeps import AXES, parse_axis, parse_value, run_sweep

EXAMPLES = """\
examples:
  # Figure 1c for kernels: test error vs label corruption (MNIST, n = 10,000)
  kernelfit sweep --dataset mnist --n-train 10000 --sigma auto \\
      --vary randomize=labels:0,labels:0.2,labels:0.4,labels:0.6,labels:0.8,labels:1

  # the norm of a noisy-label interpolant grows with n
  kernelfit sweep --dataset mnist --n-train 2000 --sigma auto \\
      --vary n_train=1000,2000,5000 --vary randomize=labels:0,labels:0.5

  # norm vs test error across front ends (the paper's 220 vs 390)
  kernelfit sweep --dataset mnist --n-train 5000 --sigma auto --vary features=raw,gabor,scattering

  # a quick look on the embedded digits
  kernelfit sweep --vary n_train=300,600 --vary randomize=none,labels:0.5 \\
      --out results/sweep-digits

axes: any run setting (RunConfig or solver Options field):
""" + textwrap.fill(", ".join(AXES), 88, initial_indent="  ", subsequent_indent="  ") + """
  values are comma-separated and parsed to the setting's type; preprocessing steps are
  joined with '+' (preprocessing=scale,scale+whiten), feature_params as KEY=VALUE pairs
  joined with '+' (feature_params=J=1,J=2). 'none' is None where a setting allows it.

outputs (in --out): points/NAME.json (one record per point, reused when rerun with the
  same settings; failed points are retried), selection/*.json (--sigma auto), sweep.csv,
  sweep.md, and the plots the grid has axes for: error_vs_corruption.png (randomize),
  norm_vs_n.png (n_train), norm_vs_error.png (features).

failures: a point that raises (out of memory, not positive definite, ...) is recorded with
  its error as its result, the sweep goes on, and the command exits with status 1 after
  listing the failures (--allow-failures: status 0; --fail-fast: stop at the first).
"""


def register(sub) -> None:
    from kernelfit.cli import HelpFormatter

    p = sub.add_parser(
        "sweep", help="a grid of runs (norm vs error studies): records, CSV, table, plots",
        description="Run the minimum-norm kernel interpolant at every point of a grid over "
                    "run settings (--vary NAME=V1,V2,..., repeatable: the cartesian product), "
                    "one record per point, then a CSV, a Markdown table and the study "
                    "plots. Every `kernelfit run` setting sets the base that each point "
                    "starts from.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    add_settings(p, RUN_SETTINGS, feature_params=True, sigma=dict(
        type=or_auto(positive_float), default=None,
        help="bandwidth of every point, or 'auto': chosen on a validation split of the clean "
             "training set (base n_train), once per front end, then held fixed"))
    g = p.add_argument_group("sweep")
    g.add_argument("--vary", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="an axis of the grid (repeatable)")
    g.add_argument("--sigma-grid", default=None, metavar="S1,S2,...", help="--sigma auto: "
                   "the bandwidths to try (default: 1/4 ... 1 x the median distance)")
    g.add_argument("--sigma-val-fraction", type=fraction, default=0.2,
                   help="--sigma auto: share of the training set held out to choose sigma "
                        "(not --val-fraction, which is pcg's early-stopping hold-out)")
    g.add_argument("--out", default="results/sweep", help="directory of records, CSV, plots")
    g.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True,
                   help="draw the PNG plots (needs the plots extra)")
    g.add_argument("--quiet", action="store_true", help="no progress lines; the result table "
                   "is still printed (and failures listed on stderr)")
    g.add_argument("--fail-fast", action="store_true", help="stop at the first failed point")
    g.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even when points failed (they are still recorded and listed)")
    g.add_argument("--json", default=None, metavar="PATH",
                   help="also write every point (settings, status, record) as one JSON list")
    p.set_defaults(func=main)


def base_config(args) -> RunConfig:
    """The base RunConfig: every `kernelfit run` setting, through the one mapping.

    The points' own progress bars stay off (the sweep prints a line a point).
    """
    return run_config(args, options=options(args, progress=False))


def main(args) -> int:
    log = (lambda *_: None) if args.quiet else print
    base = base_config(args)
    axes = [parse_axis(spec) for spec in args.vary]
    sigma_grid = None
    if args.sigma_grid:
        if base.sigma != "auto":
            raise InputError("--sigma-grid is the grid of --sigma auto; add --sigma auto")
        sigma_grid = [parse_value("sigma", s) for s in args.sigma_grid.split(",")]
    datasets = [base.dataset, *(v for a in axes if a.name == "dataset" for v in a.values)]
    check_outputs({"--json": args.json}, dirs={"--out": args.out}, datasets=datasets,
                  data_home=base.data_home)
    result = run_sweep(base, axes, args.out, sigma_grid=sigma_grid,
                       val_fraction=args.sigma_val_fraction, fail_fast=args.fail_fast,
                       plot=args.plot, log=log)
    if args.json:
        from kernelfit.atomic import write_json_atomic
        write_json_atomic(args.json, [{"name": p.name, "settings": p.settings,
                                       "status": p.status, "record": p.record,
                                       "error": p.error} for p in result.points])
    reused = sum(p.reused for p in result.points)
    log(f"\n{len(result.points)} points ({reused} reused, {len(result.failed)} not ok)")
    print(Path(result.files["markdown"]).read_text(), end="")
    for name, path in result.files.items():
        log(f"{name}: {path}")
    for name, why in result.skipped_plots.items():
        log(f"plot {name} skipped: {why}")
    for p in result.failed:
        print(f"kernelfit: point {p.name} {p.status}: {p.error.splitlines()[0]}",
              file=sys.stderr)
    return 1 if result.failed and not args.allow_failures else 0

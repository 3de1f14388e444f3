"""`kernelfit table3`: reproduce the paper's Table 3 (resumable, row by row)."""

from __future__ import annotations

import argparse
from pathlib import Path

from kernelfit.atomic import write_text_atomic
from kernelfit.cli.argtypes import fraction, nonnegative_float, positive_int
from kernelfit.cli.settings import OPTION_SETTINGS, add_settings, options
from kernelfit.pipeline.outputs import check_outputs
from kernelfit.studies.table3 import N_SELECT, VAL_FRACTION, markdown, plot, reproduce, rows

EXAMPLES = """\
examples:
  kernelfit table3 --n-train 2000 --filters 256 --plot     # every row, small and quick
  kernelfit table3 --rows cifar10-raw --plot                # one row at full size
  kernelfit table3 --rows mnist-raw --no-select             # the fixed settings, no selection
"""


def register(sub) -> None:
    keys = [r.key for r in rows()]
    p = sub.add_parser(
        "table3", help="reproduce Table 3 of Zhang et al. (2017) and print paper vs measured",
        description="Run the exact-interpolation rows of the paper's Table 3 (MNIST and "
                    "CIFAR-10; raw, scattering/Gabor and random-conv-net features). Each "
                    "row's settings (preprocessing, bandwidth, lambda of the l2 row) are "
                    "chosen first on a validation split carved from its training set, never "
                    "on test. Each finished row is saved as JSON and reused when its "
                    "result-changing settings are unchanged, so an interrupted run resumes. "
                    "Full-size rows take tens of minutes each on 2 cores.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", choices=keys, default=None, metavar="ROW",
                   help=f"rows to run (default: all): {', '.join(keys)}")
    add_settings(p, ("n_train", "n_test", "data_home"))
    p.add_argument("--filters", type=positive_int, default=4096,
                   help="random filters of the randconv rows (default: 4096; the paper: 32000)")
    p.add_argument("--lam", type=nonnegative_float, default=1e-3,
                   help="lambda of the l2 row with --no-select (default: 1e-3); with "
                        "selection it is chosen on the validation split")
    p.add_argument("--select", dest="select", action=argparse.BooleanOptionalAction,
                   default=True,
                   help="choose each row's settings on a validation split of the training "
                        "set (default); --no-select runs the fixed settings quickly")
    p.add_argument("--n-select", type=positive_int, default=N_SELECT,
                   help=f"training images the selection uses (default: {N_SELECT:,}; "
                        "randconv rows at most 2,000)")
    p.add_argument("--select-val-fraction", type=fraction, default=VAL_FRACTION,
                   help=f"held-out share of them (default: {VAL_FRACTION}; not "
                        "--val-fraction, pcg's early-stopping hold-out)")
    p.add_argument("--plot", action="store_true",
                   help="also draw OUT/table3.png: paper vs kernelfit per row, norm beside")
    p.add_argument("--out", default="results/table3",
                   help="directory of the row records, table3.md and table3.png "
                        "(default: results/table3)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress lines or bars; the table is still printed")
    # every fit's solver options, as `kernelfit run` takes them
    add_settings(p, OPTION_SETTINGS)
    p.set_defaults(func=main)


def main(args) -> int:
    log = (lambda *_: None) if args.quiet else print
    check_outputs(dirs={"--out": args.out}, data_home=args.data_home)
    results = reproduce(args.out, keys=args.rows, n_train=args.n_train, n_test=args.n_test,
                        filters=args.filters, lam=args.lam,
                        options=options(args), data_home=args.data_home,
                        select_settings=args.select, n_select=args.n_select,
                        val_fraction=args.select_val_fraction, log=log)
    out = Path(args.out)
    table = markdown(results)
    md = write_text_atomic(out / "table3.md", table)
    print(table, end="")
    written = [f"row records: {', '.join(str(out / (r['row'] + '.json')) for r in results)}",
               f"table: {md}"]
    if args.plot:
        written.append(f"figure: {plot(results, out / 'table3.png')}")
    print("\n".join(written))
    return 0

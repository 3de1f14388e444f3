"""`kernelfit run`: one fit, one report."""

from __future__ import annotations

import sys

from kernelfit.cli.settings import RUN_SETTINGS, add_settings, run_config
from kernelfit.errors import InputError, KernelfitError
from kernelfit.pipeline.outputs import check_outputs
from kernelfit.pipeline.run import fit_run

EXAMPLES = """\
examples:
  kernelfit run                                   digits, Gaussian kernel, exact Cholesky
  kernelfit run --dataset mnist --n-train 10000 --sigma auto
  kernelfit run --dataset mnist --features scattering --json mnist.json
  kernelfit run --features randconv --filters 64 --feature-param patch_size=6
  kernelfit run --randomize random-labels --n-train 1000   fit random labels exactly
  kernelfit run --solver cg --max-iter 200 --strict        fail unless CG converges
  kernelfit run --dataset mnist --sigma 5 --dtype float32 --solver pcg --val-fraction 0.1
  kernelfit run --save-model digits.kfm && kernelfit predict --model digits.kfm
"""


def register(sub) -> None:
    from kernelfit.cli import HelpFormatter

    p = sub.add_parser(
        "run", help="fit one kernel interpolant and print its report",
        description="Fit the minimum-norm kernel interpolant on a dataset and report train\n"
                    "error, test error, the interpolant's norm, the residual and timings.\n"
                    "Pixels are scaled to [0, 1] first (--preprocess).",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    add_settings(p, RUN_SETTINGS, feature_params=True)
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="PATH", default=None, help="write the run record as JSON")
    o.add_argument("--save-model", metavar="PATH", default=None,
                   help="save the fitted model (estimator, feature map, preprocessing) for "
                        "`kernelfit predict`")
    o.add_argument("--quiet", action="store_true",
                   help="no progress bars or notices; the result table is still printed")
    p.set_defaults(func=main)


def notice(message: str) -> None:
    print(f"kernelfit: {message}", file=sys.stderr)


def write_outputs(writers) -> int:
    """Run each ``(what, path, write)``; report each failure; 2 if any failed, else 0."""
    status = 0
    for what, path, write in writers:
        if path is None:
            continue
        try:
            write(path)
        except (KernelfitError, OSError) as err:
            print(f"kernelfit: error: the {what} could not be written to {path}: {err}",
                  file=sys.stderr)
            status = 2
            continue
        print(f"{what} written to {path}")
    return status


def main(args) -> int:
    from kernelfit.pipeline.run import STREAMED_REFUSAL
    from kernelfit.pipeline.saved_model import save_model

    if args.save_model and args.stream:
        raise InputError(STREAMED_REFUSAL)
    check_outputs({"--json": args.json, "--save-model": args.save_model},
                  datasets=[args.dataset], data_home=args.data_home)
    fitted = fit_run(run_config(args), log=None if args.quiet else notice,
                     refuse_streamed=bool(args.save_model))
    record = fitted.record
    # The table first: whatever happens to the files, the result is on the screen.
    print(record.table())
    return write_outputs([("record", args.json, record.write_json),
                          ("model", args.save_model, lambda p: save_model(p, fitted))])

"""The `kernelfit` command: parses, calls the library, prints. No logic of its own."""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
import warnings
from pathlib import Path

from kernelfit.errors import AccuracyWarning, KernelfitError

_PYTHON_SHOW = warnings.showwarning

DESCRIPTION = """\
Exact minimum-norm kernel interpolation (K alpha = y) on image data, as in
Zhang et al., "Understanding deep learning requires rethinking generalization"
(ICLR 2017), section 5. `kernelfit run` with no arguments fits the Gaussian
kernel interpolant on scikit-learn's embedded digits and prints its report.
"""


EXAMPLES = """\
examples:
  kernelfit run                          fit digits and print the report
  kernelfit run --dataset mnist --n-train 10000 --sigma auto --json run.json
  kernelfit data fetch mnist             fetch, verify and cache MNIST
  kernelfit COMMAND --help               options of one command, with examples
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default shown once: appended only where the help text does not say it.

    No "(default: None)" or "(default: False)" either: an unset option's help
    says what happens instead. Description and epilog keep their line breaks.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == []
        if "default" in text or unset or action.default is argparse.SUPPRESS \
                or not action.option_strings:
            return text
        return super()._get_help_string(action)


# One module per command, each with ``register(subparsers)``; listed in help order.
COMMANDS = ("run_cmd", "plan_cmd", "predict_cmd", "data_cmd", "table3_cmd", "sgd_cmd", "sweep_cmd",
            "compare_cmd", "expressivity_cmd", "bench_cmd", "study_cmd")


def build_parser() -> argparse.ArgumentParser:
    from importlib import import_module

    parser = argparse.ArgumentParser(
        prog="kernelfit", description=DESCRIPTION, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from kernelfit import __version__
    parser.add_argument("--version", action="version", version=f"kernelfit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        import_module(f"{__name__}.{name}").register(sub)
    return parser


@functools.lru_cache(maxsize=1)
def _package_dirs() -> frozenset:
    """The source folders of kernelfit, its features and its command (without importing them)."""
    from importlib.util import find_spec

    return frozenset(Path(p).resolve() for name in ("kernelfit", "kernelfit.features",
                                                     "kernelfit.cli")
                     for p in (find_spec(name).submodule_search_locations or ()))


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """kernelfit's own warnings as one plain line; anyone else's as Python prints them."""
    if issubclass(category, AccuracyWarning) or _package_dirs().intersection(
            Path(filename).resolve().parents):
        print(f"kernelfit: warning: {message}", file=file or sys.stderr)
    else:
        _PYTHON_SHOW(message, category, filename, lineno, file, line)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # What the user typed, for records that name the command that made them (argv given
    # here, as tests and scripts call main(argv), is that command, not sys.argv).
    args.command_line = shlex.join(["kernelfit", *(sys.argv[1:] if argv is None else argv)])
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        # A figure asked for (--plot) or always drawn (draws=True) needs the plots
        # extra: say so before the work, not after an hour of it.
        if getattr(args, "plot", False) or getattr(args, "draws", False):
            from kernelfit.plots import pyplot
            pyplot()
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except KernelfitError as err:
        print(f"kernelfit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        print("kernelfit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

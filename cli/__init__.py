"""The `kernelfit` command: parses, calls the library, prints. No logic of its own."""

from __future__ import annotations

import argparse
import sys

from ..errors import KernelfitError

DESCRIPTION = """\
Exact minimum-norm kernel interpolation (K alpha = y) on image data, as in
Zhang et al., "Understanding deep learning requires rethinking generalization"
(ICLR 2017), section 5. `kernelfit run` with no arguments fits the Gaussian
kernel interpolant on scikit-learn's embedded digits and prints its report.
"""


# One module per command, each with ``register(subparsers)``; listed in help order.
COMMANDS = ("run_cmd", "data_cmd", "table3_cmd", "sgd_cmd")


def build_parser() -> argparse.ArgumentParser:
    from importlib import import_module

    parser = argparse.ArgumentParser(
        prog="kernelfit", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"kernelfit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KernelfitError as err:
        print(f"kernelfit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        print("kernelfit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""`kernelfit sgd`: SGD beside the interpolant (the linear model; trained networks)."""

from __future__ import annotations

import argparse
from importlib import import_module

# One module per `sgd` subcommand, each with ``register(subparsers)``.
SUBCOMMANDS = ("sgd_net_cmd", "sgd_linear_cmd")


def register(sub) -> None:
    p = sub.add_parser(
        "sgd", help="SGD beside the interpolant: the same linear model, and trained networks",
        description="Train by SGD and put the result beside the exact minimum-norm "
                    "interpolant (Zhang et al. 2017, section 5 and appendix A).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    group = p.add_subparsers(dest="sgd_command", metavar="MODEL")
    for name in SUBCOMMANDS:
        import_module(f"{__package__}.{name}").register(group)
    p.set_defaults(func=lambda args: p.print_help() or 0)

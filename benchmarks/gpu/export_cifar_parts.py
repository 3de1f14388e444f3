"""Write CIFAR-10 as .npy pieces in folders of at most --max-mb each, for cifar_randconv.py.

    python benchmarks/gpu/export_cifar_parts.py OUT_DIR [--max-mb 63]

A device call carries at most 64 MiB of working tree (the repository
included), and CIFAR-10 is 185 MB as uint8: each folder OUT_DIR/partK travels
in its own call to the same warm machine (what an earlier call left there
stays), and the run then reads all of them:

    python benchmarks/gpu/cifar_randconv.py OUT_DIR/part0 OUT_DIR/part1 ... --json R.json

Arrays that do not fit a folder's remaining room are cut by rows into
``NAME.partJ.npy`` pieces (J = 0, 1, ... in row order), which the loader
concatenates. The data come from kernelfit's cache (``kernelfit data fetch
cifar10`` first).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar_randconv import ROOT  # noqa: E402,F401  (imports kernelfit from this checkout)

from kernelfit.data import load_split  # noqa: E402
from kernelfit.errors import InputError  # noqa: E402

# Room kept per file for the .npy header and rounding.
HEADER_BYTES = 4096


def pack(arrays: dict, max_bytes: int) -> list[dict]:
    """Folders (lists of {file name: array}) of at most max_bytes, arrays cut by rows."""
    folders, room, current = [], max_bytes, {}
    for name, a in arrays.items():
        row = a[:1].nbytes
        if row + HEADER_BYTES > max_bytes:
            raise InputError(f"--max-mb is too small for one row of {name}")
        rows, start, piece = len(a), 0, 0
        whole = a.nbytes + HEADER_BYTES <= room
        while start < rows:
            take = min(rows - start, (room - HEADER_BYTES) // row)
            if take <= 0:
                folders.append(current)
                current, room = {}, max_bytes
                whole = False
                continue
            fname = f"{name}.npy" if whole else f"{name}.part{piece}.npy"
            current[fname] = a[start:start + take]
            room -= a[start:start + take].nbytes + HEADER_BYTES
            start, piece = start + take, piece + 1
    if current:
        folders.append(current)
    return folders


def write_parts(arrays: dict, out_dir, max_bytes: int) -> list[Path]:
    """Write ``arrays`` into OUT_DIR/part0, part1, ... of at most ``max_bytes`` each."""
    out = []
    for k, folder in enumerate(pack(arrays, max_bytes)):
        d = Path(out_dir) / f"part{k}"
        d.mkdir(parents=True, exist_ok=True)
        for fname, a in folder.items():
            np.save(d / fname, np.ascontiguousarray(a))
        out.append(d)
    return out


def main(argv=None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--max-mb", type=float, default=63.0, help="bytes per folder / 1e6")
    args = p.parse_args(argv)
    train, test = load_split("cifar10", progress=False)
    arrays = {"y_train": train.labels, "y_test": test.labels,
              "x_test": test.images, "x_train": train.images}
    folders = write_parts(arrays, args.out_dir, int(args.max_mb * 1e6))
    for d in folders:
        size = sum(f.stat().st_size for f in d.iterdir())
        print(f"{d}: {', '.join(sorted(f.name for f in d.iterdir()))} ({size / 1e6:.1f} MB)")
    return folders


if __name__ == "__main__":
    main()

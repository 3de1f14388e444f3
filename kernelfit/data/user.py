"""Your own data as a dataset: ``npz:PATH`` and ``idx:DIR``, verified and cached like MNIST.

- ``npz:PATH``: a NumPy ``.npz`` with the arrays ``X_train``, ``y_train``,
  ``X_test``, ``y_test``. Images of any shape ``(n, ...)`` (``(n, d)``
  vectors, ``(n, H, W)`` gray, ``(n, H, W, C)`` colour), any numeric dtype;
  integer labels, any number of classes, any values.
- ``idx:DIR``: the four IDX files with MNIST's names
  (``train-images-idx3-ubyte`` ...), gzipped or not, images of any size,
  labels of any values (e.g. Fashion-MNIST, KMNIST, EMNIST subsets), in DIR
  itself or in ``DIR/raw`` (torchvision's layout); no other folder is searched.

Everything is checked once, with typed errors that say what to fix: finite
values, one label per image, integer labels, the same image shape in both
splits, at least 2 training and 1 test point. Labels are renumbered 0..k-1
in sorted order (the original values are the class names). Pixels are
scaled by ``max_value``: 255 for uint8, 1 for floats already in [0, 1],
otherwise the largest absolute value in the data.

The decoded arrays are cached under ``data_home()/user/KIND-NAME-HASH/``
with a manifest like the fetched datasets', which records the source's
sha256: a later load checks the source against it and refuses a file that
changed since (``kernelfit data clear`` forgets it when the change is meant).
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil

from kernelfit.data import cache, idx
from kernelfit.errors import DatasetFormatError, UserDataError, VerificationError
from kernelfit.formats import human_bytes, read_npy_header

KINDS = ("npz", "idx")
NPZ_KEYS = ("X_train", "y_train", "X_test", "y_test")
#: Subdirectory of the cache root holding user datasets.
USER_DIR = "user"
SPLITS = ("train", "test")
#: The one subfolder of ``idx:DIR`` also read (torchvision keeps the files in ROOT/NAME/raw).
IDX_SUBFOLDER = "raw"


def is_user(name) -> bool:
    """Whether ``name`` names user data (``npz:PATH`` or ``idx:DIR``)."""
    return isinstance(name, str) and name.partition(":")[0] in KINDS and ":" in name


def _parse(name: str) -> tuple[str, Path]:
    kind, _, rest = name.partition(":")
    if kind not in KINDS or not rest.strip():
        raise UserDataError(name, "give a path after the kind, e.g. npz:data/mine.npz or "
                                  "idx:data/fashion-mnist")
    return kind, Path(rest.strip()).expanduser().resolve()


def cache_name(name: str) -> str:
    """The directory name of ``name``'s cache: kind, file name, and a hash of the full path."""
    kind, path = _parse(name)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem if kind == "npz" else path.name)[:40]
    return f"{kind}-{stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"


def user_root(name: str, data_home=None) -> Path:
    """Where ``name`` is cached."""
    return cache.data_home(data_home) / USER_DIR / cache_name(name)


# --- reading the source ------------------------------------------------------------------


def _read_npz(path: Path):
    """(decode, read_log): decoding (decompressing) is left until the cache misses."""
    if not path.is_file():
        raise UserDataError(f"npz:{path}", "no such file")
    blob = path.read_bytes()
    return (lambda: _decode_npz(blob, path)), {
        str(path): {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}}


def _decode_npz(blob: bytes, path: Path) -> dict:
    origin = f"npz:{path}"
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            members = {m.filename: m for m in zf.infolist()}
            arrays = sorted(Path(m).stem for m in members if m.endswith(".npy"))
            missing = [k for k in NPZ_KEYS if k + ".npy" not in members]
            if missing:
                raise UserDataError(origin, f"it has the arrays {arrays}; missing "
                                    f"{', '.join(missing)} (save it with numpy.savez(PATH, "
                                    "X_train=..., y_train=..., X_test=..., y_test=...))")
            _check_npz_sizes({k: _npy_header(zf, members[k + ".npy"], origin)
                              for k in NPZ_KEYS}, origin)
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in NPZ_KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, UserDataError):
            raise
        raise UserDataError(origin, f"not a readable .npz without pickled objects "
                                    f"({err})") from err
    return {"train": (arrays["X_train"], arrays["y_train"]),
            "test": (arrays["X_test"], arrays["y_test"])}


def _npy_header(zf: zipfile.ZipFile, member: zipfile.ZipInfo, origin: str):
    """(shape, dtype, data bytes held) of one ``.npy`` member, from its header alone.

    ``np.load`` allocates whatever shape a header claims before reading a byte
    of a zip member (a memory map does not work inside a zip), so a header
    that lies about its shape is caught here, before any of it is allocated.
    """
    name = member.filename
    with zf.open(member) as f:
        try:
            shape, _, dtype = read_npy_header(f)
        except ValueError as err:
            raise UserDataError(origin, f"{name}: {err}; save it with numpy.savez (numeric "
                                        "arrays)") from None
        held = member.file_size - f.tell()
    if dtype.hasobject:
        raise UserDataError(origin, f"{name} holds pickled Python objects ({dtype}), "
                                    "which are never unpickled here (loading them could run "
                                    "code): save numeric arrays, e.g. X.astype(np.float32)")
    return shape, dtype, held


def _check_npz_sizes(headers: dict, origin: str) -> None:
    """Refuse a header whose shape its member's bytes cannot hold, or arrays that do not fit."""
    total = 0
    for key, (shape, dtype, held) in headers.items():
        need = math.prod(shape) * dtype.itemsize      # Python ints: no overflow
        if need != held:
            raise UserDataError(origin, f"{key}.npy's header says shape {shape} of {dtype} "
                                        f"({human_bytes(need)}), but the file holds "
                                        f"{human_bytes(held)} of data for it: the file is "
                                        "damaged or was not written by numpy; save the arrays "
                                        "again with numpy.savez")
        total += need
    free = _available_memory()
    if total > free:
        raise UserDataError(origin, f"its arrays take {human_bytes(total)} once decompressed, "
                                    f"but only {human_bytes(free)} of memory is available; "
                                    "save a subset of the points (or free memory)")


def _available_memory() -> int:
    # The OS's figure, as kernelfit.engine.plan.available_memory reads it: data/ imports
    # nothing of the engine.
    return int(psutil.virtual_memory().available)


def _read_idx(path: Path):
    from kernelfit.data.sources import SourceFiles

    origin = f"idx:{path}"
    if not path.is_dir():
        raise UserDataError(origin, "not a directory (idx:DIR takes the directory that "
                                    "holds the four IDX files)")
    # DIR's own files, then torchvision's DIR/raw, never a search further down: a folder
    # such as / would otherwise be walked, and another dataset's files found there used.
    seen = {}
    for folder in (path, path / IDX_SUBFOLDER):
        if not folder.is_dir():
            continue
        files = SourceFiles.open(folder, depth=0)
        found = {split: [idx.find_file(files, b) for b in bases]
                 for split, bases in idx.MNIST_FILES.items()}
        if all(f is not None for names in found.values() for f in names):
            with files:
                return _decode_idx(files, found, origin)
        files.close()
        seen[folder] = [b for split, bases in idx.MNIST_FILES.items()
                        for b, f in zip(bases, found[split], strict=True) if f is None]
    # name what the folder closest to complete lacks, and every place looked in
    best = min(seen, key=lambda folder: len(seen[folder]))
    raise UserDataError(origin, f"missing {', '.join(seen[best])} (with or without .gz) in "
                                f"{best}. idx:DIR reads the four IDX files from DIR itself or "
                                f"from DIR/{IDX_SUBFOLDER} (looked in "
                                f"{', '.join(map(str, seen))}), never from other subfolders: "
                                "name the folder that holds all four")


def _decode_idx(files, found: dict, origin: str):
    decoded = {}
    for split, (img, lab) in found.items():
        try:
            x = idx.parse_idx(files.read(img), files.where(img), magic=idx.IMAGES_MAGIC,
                              ndim=3)
            y = idx.parse_idx(files.read(lab), files.where(lab), magic=idx.LABELS_MAGIC,
                              ndim=1)
        except DatasetFormatError as err:
            raise UserDataError(origin, f"{err.path}: {err.problem}") from err
        decoded[split] = (x, y)
    return (lambda: decoded), dict(files.read_log)


def source_files(name: str) -> tuple[Path, list[Path]]:
    """(root, files): every file on disk that loading ``name`` may read, nothing read yet.

    ``npz:PATH``: the file itself. ``idx:DIR``: every file the IDX search sees
    under DIR (the four it picks and any others beside them, archives
    included), so that a change to whichever of them a load reads is seen.

    Raises
    ------
    UserDataError
        The file or directory is missing.
    """
    from kernelfit.data.sources import SourceFiles

    kind, path = _parse(name)
    if kind == "npz":
        if not path.is_file():
            raise UserDataError(name, "no such file")
        return path.parent, [path]
    if not path.is_dir():
        raise UserDataError(name, "not a directory (idx:DIR takes the directory that holds "
                                  "the four IDX files)")
    with SourceFiles.open(path) as files:
        return path, list(files.local_files)


def _source_digest(read_log: dict) -> str:
    h = hashlib.sha256()
    for where in sorted(read_log, key=lambda w: Path(w).name):
        h.update(f"{Path(where).name}\0{read_log[where]['sha256']}\n".encode())
    return h.hexdigest()


# --- checking it -------------------------------------------------------------------------


def validate(decoded: dict, origin: str) -> tuple[dict, dict]:
    """Check user arrays; return them normalized and what the manifest records about them.

    Returns
    -------
    decoded : dict
        ``{"train": (images, labels), "test": ...}``; images as given (bool
        becomes uint8), labels int64 renumbered 0..k-1.
    meta : dict
        ``classes`` (the original label values, as strings), ``max_value``,
        ``image_shape``.

    Raises
    ------
    UserDataError
        Any check fails; the message names the array and what to do.
    """
    names = {"train": ("X_train", "y_train"), "test": ("X_test", "y_test")}
    out = {}
    for split in SPLITS:
        x, y = (np.asarray(a) for a in decoded[split])
        xn, yn = names[split]
        if x.ndim < 2 or x.ndim > 4:
            raise UserDataError(origin, f"{xn} has shape {x.shape}; give one row per point: "
                                        "(n, d), (n, H, W) or (n, H, W, C)")
        if x.dtype.kind not in "biuf":
            raise UserDataError(origin, f"{xn} has dtype {x.dtype}; give numbers (uint8 "
                                        "pixels or floats)")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
            raise UserDataError(origin, f"{xn} has NaN or infinite values in {bad} of its "
                                        f"{len(x)} points; remove or impute them")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]  # Keras-style (n, 1) label columns
        if y.ndim != 1:
            raise UserDataError(origin, f"{yn} has shape {y.shape}; give one integer class "
                                        "label per point, shape (n,) (one-hot rows: "
                                        "y.argmax(axis=1))")
        if y.dtype.kind not in "biu":
            hint = (" (they are whole numbers: y.astype(int))"
                    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))
                    else "")
            raise UserDataError(origin, f"{yn} has dtype {y.dtype}; labels must be integer "
                                        f"class indices{hint}")
        if len(x) != len(y):
            raise UserDataError(origin, f"{xn} has {len(x)} points but {yn} has {len(y)} "
                                        "labels; give one label per point")
        out[split] = (x.astype(np.uint8) if x.dtype.kind == "b" else x, y.astype(np.int64))
    (xtr, ytr), (xte, yte) = out["train"], out["test"]
    if len(xtr) < 2:
        raise UserDataError(origin, f"X_train has {len(xtr)} point(s); an interpolant needs at "
                                    "least 2 training points")
    if len(xte) < 1:
        raise UserDataError(origin, "X_test is empty; give at least 1 test point")
    if xtr.shape[1:] != xte.shape[1:]:
        raise UserDataError(origin, f"train points have shape {xtr.shape[1:]} but test points "
                                    f"{xte.shape[1:]}; both splits need the same shape")
    if xtr.dtype != xte.dtype:
        common = np.result_type(xtr, xte)
        out = {s: (x.astype(common), y) for s, (x, y) in out.items()}
    classes, inverse = np.unique(np.concatenate([ytr, yte]), return_inverse=True)
    out = {"train": (out["train"][0], inverse[:len(ytr)].astype(np.int64)),
           "test": (out["test"][0], inverse[len(ytr):].astype(np.int64))}
    x_all = (out["train"][0], out["test"][0])
    if x_all[0].dtype == np.uint8:
        max_value = 255.0
    else:
        lo = min(float(a.min()) for a in x_all)
        hi = max(float(a.max()) for a in x_all)
        if x_all[0].dtype.kind == "f" and lo >= 0 and hi <= 1:
            max_value = 1.0
        else:
            max_value = max(abs(lo), abs(hi)) or 1.0
    meta = {"classes": [str(c) for c in classes.tolist()], "max_value": max_value,
            "image_shape": list(xtr.shape[1:]), "dtype": str(xtr.dtype)}
    return out, meta


# --- loading through the cache -----------------------------------------------------------


def load_arrays(name: str, split: str, data_home=None, progress: bool = True):
    """(images, labels, manifest) of one split of user data ``name``, through the cache.

    The first load validates the source and caches it; later loads check the
    source's sha256 against the one recorded then and read the cache.

    Raises
    ------
    UserDataError
        The source is missing, unreadable, or fails a check.
    VerificationError
        The source changed since it was first loaded, or the cache was damaged.
    """
    kind, path = _parse(name)
    root = user_root(name, data_home)
    decode, read_log = _read_npz(path) if kind == "npz" else _read_idx(path)
    digest = _source_digest(read_log)
    manifest = cache.manifest_at(root)
    if manifest is not None and cache.sizes_ok(root, manifest):
        recorded = manifest.get("user", {}).get("source_sha256")
        if recorded != digest:
            raise VerificationError(
                f"{name}: the data changed since they were first loaded (sha256 {digest[:16]}..., "
                f"recorded {str(recorded)[:16]}...). If the change is meant, run `kernelfit "
                f"data clear {name}` and load again; otherwise restore the original files.")
        return cache.read_split(root, split, f"Run `kernelfit data clear {name}` and load "
                                             "again to rebuild it from the source.")
    decoded, meta = validate(decode(), name)
    provenance = {"source": kind, "path": str(path), "files": read_log,
                  "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    cache.write_cache(name, decoded, cache.encode(decoded), provenance, root, progress,
                      extra={"user": {"kind": kind, "path": str(path), "source_sha256": digest,
                                      **meta}})
    return cache.read_split(root, split, f"Run `kernelfit data clear {name}` and load again.")

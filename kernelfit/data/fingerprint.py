"""The fingerprint of a dataset: a sha256 that changes whenever the data a spec reads change.

Every reused result (sweep points, Table 3 rows, cached features, network
runs) is keyed by it, so a result made from other data under the same name
(a replaced ``npz:`` file, a re-fetched cache) is never taken for this one's.

- ``digits``: the sha256 of its two splits' arrays as loaded (embedded in
  scikit-learn, so they change only with scikit-learn), once per process.
- ``mnist``, ``cifar10``: the sha256s the verified cache recorded (every
  load checks the files against them); a dataset not cached yet is fetched
  first, as the run would.
- ``npz:PATH``, ``idx:DIR``: size and sha256 of every file a load may read
  (:func:`kernelfit.data.user.source_files`). Each file is hashed once and
  remembered by its stat (size, mtime, ctime, inode) in
  ``data_home()/fingerprints.json``; any change to the stat means a rehash.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from pathlib import Path

from kernelfit.atomic import write_json_atomic
from kernelfit.data import cache, digits, user
from kernelfit.data.sources import sha256_file

#: The stat -> sha256 book of user data files, under the cache root.
BOOK = "fingerprints.json"
# A file written in the last RACY_NS may be written again within the same mtime
# tick (coarse file-system clocks tick every few ms) and keep its stat: its
# sha256 is not remembered, so the next fingerprint hashes it again (git's
# "racily clean" rule).
RACY_NS = 2_000_000_000


def data_fingerprint(name: str, data_home=None, *, progress: bool = False) -> str:
    """The sha256 (hex) of the data that dataset spec ``name`` reads.

    Parameters
    ----------
    name : {"digits", "mnist", "cifar10"} or "npz:PATH" or "idx:DIR"
    data_home : str or Path, optional
        Cache root (see :func:`kernelfit.data.cache.data_home`).
    progress : bool
        Say on stderr when a dataset has to be fetched first.

    Returns
    -------
    str
        64 hex digits; equal for equal data, different when any file differs.

    Raises
    ------
    InputError
        ``name`` is not a dataset.
    UserDataError, DatasetError
        The files are missing or cannot be fetched (as a load would say).
    """
    if user.is_user(name):
        root, paths = user.source_files(name)
        files = [[str(p.relative_to(root)), *file_digest(p, data_home)] for p in paths]
        return _digest({"user": name.partition(":")[0], "files": files})
    from kernelfit.data.dataset import _info

    _info(name)                                   # unknown names: the loader's InputError
    if name == "digits":
        import sklearn
        return _digits_fingerprint(sklearn.__version__)
    if not cache.is_cached(name, data_home):
        cache.fetch(name, data_home=data_home, progress=progress)
    manifest = cache.read_manifest(name, data_home)
    return _digest({name: {f: m["sha256"] for f, m in manifest["files"].items()}})


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


@functools.lru_cache(maxsize=2)
def _digits_fingerprint(sklearn_version: str) -> str:
    """Keyed by scikit-learn's version: the arrays ship with it."""
    h = hashlib.sha256()
    for split in ("train", "test"):
        images, labels, _ = digits.load(split)
        for array in (images, labels):
            h.update(f"{split} {array.dtype.str} {array.shape}\n".encode())
            h.update(array.tobytes())
    return h.hexdigest()


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def file_digest(path, data_home=None) -> tuple[int, str]:
    """(bytes, sha256) of the file at ``path``, hashed only when its stat changed.

    The book of stats and sha256s lives under the cache root; where it cannot
    be written the file is simply hashed every time.
    """
    path = Path(path).resolve()
    book_path = cache.data_home(data_home) / BOOK
    try:
        book = json.loads(book_path.read_text())
    except (OSError, ValueError):
        book = {}
    book = book if isinstance(book, dict) else {}
    stat = _stat(path)
    entry = book.get(str(path))
    if isinstance(entry, dict) and entry.get("stat") == stat and isinstance(entry.get("sha256"),
                                                                             str):
        return stat[0], entry["sha256"]
    sha = sha256_file(path)
    # Remember it only if the file stood still while it was read, and not just now.
    if _stat(path) == stat and time.time_ns() - stat[1] > RACY_NS:
        book = {p: e for p, e in book.items() if Path(p).exists()}   # forget removed files
        book[str(path)] = {"stat": stat, "sha256": sha}
        try:
            write_json_atomic(book_path, book)
        except OSError:
            pass                                  # a read-only cache root: hash next time too
    return stat[0], sha

"""What the cache holds, and clearing it: `kernelfit data list` and `kernelfit data clear`.

The cache root (:func:`kernelfit.data.cache.data_home`) holds one directory
per fetched dataset, ``user/`` (one directory per ``npz:``/``idx:`` source)
and ``features/`` (cached feature matrices). Clearing removes only those
directories, and never follows a symbolic link out of the root: a link is
removed itself, its target left alone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import InputError
from . import cache, user
from .sources import sha256_file

FEATURES = "features"


def tree_bytes(path: Path) -> tuple[int, int]:
    """(bytes, files) of the regular files under ``path``, links not followed."""
    if path.is_symlink() or not path.exists():
        return 0, 0
    if path.is_file():
        return path.lstat().st_size, 1
    total = count = 0
    for dirpath, _, filenames in os.walk(path, followlinks=False):
        for f in filenames:
            st = os.lstat(os.path.join(dirpath, f))
            total += st.st_size
            count += 1
    return total, count


def _feature_state(folder: Path) -> str:
    from ..features.cache import META_SUFFIX

    arrays = sorted(folder.glob("*.npy"))
    if not arrays:
        return "empty"
    unrecorded = damaged = 0
    for path in arrays:
        meta = path.with_name(path.stem + META_SUFFIX)
        if not meta.is_file():
            unrecorded += 1
        elif _damaged(path, meta):
            damaged += 1
    parts = [f"{len(arrays)} feature matrices"]
    if damaged:
        parts.append(f"{damaged} DAMAGED (recomputed on next use)")
    if unrecorded:
        parts.append(f"{unrecorded} without checksum (recomputed on next use)")
    if not damaged and not unrecorded:
        parts.append("all verified")
    return ", ".join(parts)


def _damaged(path: Path, meta_path: Path) -> bool:
    try:
        meta = json.loads(meta_path.read_text())
        return (path.stat().st_size != meta.get("bytes")
                or sha256_file(path) != meta.get("sha256"))
    except (OSError, ValueError, AttributeError):
        return True


def _dataset_state(root: Path) -> str:
    if root.is_symlink():
        return f"link to {os.path.realpath(root)}"
    manifest = cache.manifest_at(root)
    if manifest is None:
        return "incomplete (no manifest): fetch again"
    problems = cache.problems_at(root)
    return "verified" if not problems else "DAMAGED: " + "; ".join(problems)


def entries(data_home=None) -> list[dict]:
    """Every dataset and the feature cache under the cache root, sizes and verified state.

    Every file is hashed against its recorded sha256 (over 1 GB/s), so the
    state is the one a load would find.

    Returns
    -------
    list of dict
        ``name`` (what ``clear`` takes), ``path``, ``bytes``, ``files``, ``state``.
    """
    root = cache.data_home(data_home)
    out = []
    for name in cache.FETCH_SPECS:
        d = root / name
        if d.exists() or d.is_symlink():
            b, n = tree_bytes(d)
            out.append({"name": name, "path": str(d), "bytes": b, "files": n,
                        "state": _dataset_state(d)})
    udir = root / user.USER_DIR
    if udir.is_dir() and not udir.is_symlink():
        for d in sorted(udir.iterdir()):
            if not d.is_dir() or d.name.startswith("."):
                continue
            manifest = cache.manifest_at(d) or {}
            b, n = tree_bytes(d)
            out.append({"name": manifest.get("name", d.name), "key": d.name, "path": str(d),
                        "bytes": b, "files": n, "state": _dataset_state(d)})
    fdir = root / FEATURES
    if fdir.exists() or fdir.is_symlink():
        b, n = tree_bytes(fdir)
        out.append({"name": FEATURES, "path": str(fdir), "bytes": b, "files": n,
                    "state": (f"link to {os.path.realpath(fdir)}" if fdir.is_symlink()
                              else _feature_state(fdir))})
    return out


def _targets(name: str, root: Path) -> list[Path]:
    if name == "all":
        return [Path(e["path"]) for e in entries(root)]
    if name in cache.FETCH_SPECS:
        return [root / name]
    if name == FEATURES:
        return [root / FEATURES]
    if user.is_user(name):
        return [root / user.USER_DIR / user.cache_name(name)]
    udir = root / user.USER_DIR
    if udir.is_dir() and not udir.is_symlink() and (udir / name).is_dir() \
            and Path(name).name == name and not name.startswith("."):
        return [udir / name]
    known = [e["name"] for e in entries(root)]
    raise InputError(f"nothing called {name!r} in the cache {root}; clear one of: "
                     + ", ".join(known + ["all"]) if known else
                     f"nothing called {name!r} in the cache {root}, which holds nothing")


def clear(name: str, data_home=None) -> list[dict]:
    """Remove a cached dataset (``mnist``, ``npz:PATH`` ...), ``features``, or ``all``.

    Returns
    -------
    list of dict
        One per removed entry: ``path``, ``bytes`` freed, ``files``, and
        ``note`` (e.g. a link removed without touching its target).

    Raises
    ------
    InputError
        ``name`` is not in the cache; the message lists what is.
    """
    root = cache.data_home(data_home)
    real_root = root.resolve()
    done = []
    for target in _targets(name, root):
        if not (target.exists() or target.is_symlink()):
            continue
        parent = target.parent.resolve()
        if parent != real_root and parent != (real_root / user.USER_DIR):
            raise InputError(f"refusing to remove {target}: it is not inside the cache root "
                             f"{root}")
        if target.is_symlink():
            # Never follow a link out of the cache: remove the link, keep what it points to.
            where = os.path.realpath(target)
            target.unlink()
            done.append({"path": str(target), "bytes": 0, "files": 0,
                         "note": f"removed the link; its target {where} was left alone"})
            continue
        b, n = tree_bytes(target)
        if target.is_dir():
            shutil.rmtree(target)  # removes links inside, never what they point to
        else:
            target.unlink()
        done.append({"path": str(target), "bytes": b, "files": n, "note": ""})
    return done

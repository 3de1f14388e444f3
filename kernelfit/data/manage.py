"""What the cache holds, and clearing it: `kernelfit data list` and `kernelfit data clear`.

The cache root (:func:`kernelfit.data.cache.data_home`) holds one directory
per fetched dataset, ``user/`` (one directory per ``npz:``/``idx:`` source),
``features/`` (cached feature matrices) and ``scratch/`` (K's tile files of
runs with K on disk), and the small book of user files' sha256s
(:mod:`.fingerprint`, not listed: it only saves rehashing). Clearing removes
only those directories, and never follows a symbolic link out of the root: a
link is removed itself, its target left alone. The scratch folder is cleared
under its lock (:mod:`kernelfit.locks`): while a run holds it, nothing is
removed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kernelfit.data import cache, user
from kernelfit.errors import InputError
from kernelfit.locks import LOCK_NAME, hold, holder

FEATURES = "features"


def tree_bytes(path: Path) -> tuple[int, int]:
    """(bytes, files) of the regular files under ``path``, links not followed.

    Lock files are not counted: they hold a PID, not data, and come and go
    with whoever locks (``data clear scratch`` itself).
    """
    if path.is_symlink() or not path.exists():
        return 0, 0
    if path.is_file():
        return path.lstat().st_size, 1
    total = count = 0
    for dirpath, _, filenames in os.walk(path, followlinks=False):
        for f in filenames:
            if f == LOCK_NAME:
                continue
            st = os.lstat(os.path.join(dirpath, f))
            total += st.st_size
            count += 1
    return total, count


def _dataset_state(root: Path) -> str:
    if root.is_symlink():
        return f"link to {os.path.realpath(root)}"
    manifest = cache.manifest_at(root)
    if manifest is None:
        return "incomplete (no manifest): fetch again"
    problems = cache.problems_at(root)
    return "verified" if not problems else "DAMAGED: " + "; ".join(problems)


def _scratch_state(folder: Path) -> str:
    if not folder.is_dir():
        return "not a folder: runs with K on disk refuse it; remove it"
    pid = holder(folder)
    if pid is not None:
        return f"in use by {f'PID {pid}' if pid else 'a run'} (K's tiles)"
    if not any(p.name != LOCK_NAME for p in folder.iterdir()):
        return "empty"
    return ("not in use: K's tiles of a failed or killed run (the same command resumes from "
            "them) or kept with --keep-scratch")


def entries(data_home=None) -> list[dict]:
    """Every dataset, the feature folder and the scratch folder under the cache root.

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
        # What the feature matrices' checksums say is the feature cache's to tell
        # (kernelfit.features.cache.describe): data knows nothing of features.
        b, n = tree_bytes(fdir)
        out.append({"name": FEATURES, "path": str(fdir), "bytes": b, "files": n,
                    "state": (f"link to {os.path.realpath(fdir)}" if fdir.is_symlink()
                              else f"{n} files")})
    sdir = root / cache.SCRATCH
    if sdir.exists() or sdir.is_symlink():
        b, n = tree_bytes(sdir)
        out.append({"name": cache.SCRATCH, "path": str(sdir), "bytes": b, "files": n,
                    "state": (f"link to {os.path.realpath(sdir)}" if sdir.is_symlink()
                              else _scratch_state(sdir))})
    return out


def _targets(name: str, root: Path) -> list[Path]:
    if name == "all":
        return [Path(e["path"]) for e in entries(root)]
    if name in cache.FETCH_SPECS:
        return [root / name]
    if name in (FEATURES, cache.SCRATCH):
        return [root / name]
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
    """Remove a cached dataset (``mnist``, ``npz:PATH`` ...), ``features``, ``scratch``, or ``all``.

    Returns
    -------
    list of dict
        One per removed entry: ``path``, ``bytes`` freed, ``files``, and
        ``note`` (e.g. a link removed without touching its target).

    Raises
    ------
    InputError
        ``name`` is not in the cache; the message lists what is.
    FileInUseError
        The scratch folder is to be cleared while a run holds it (its PID is
        named); nothing at all is removed then.
    """
    root = cache.data_home(data_home)
    real_root = root.resolve()
    targets = _targets(name, root)
    sdir = root / cache.SCRATCH
    # Held from before anything is removed until the folder is gone: a run that
    # starts meanwhile is refused instead of losing its tiles.
    lock = (hold(sdir, what="the scratch folder", remedy=(
        "A kernelfit run is building or factoring K there; clear it once the run has ended "
        "(or stop the run: its tiles are kept for a resume unless cleared)."))
        if sdir in targets and sdir.is_dir() and not sdir.is_symlink() else None)
    try:
        return _remove(targets, root, real_root)
    finally:
        if lock is not None:
            lock.release()


def _remove(targets: list[Path], root: Path, real_root: Path) -> list[dict]:
    done = []
    for target in targets:
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

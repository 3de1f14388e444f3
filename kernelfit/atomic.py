"""Files written whole or not at all: one writer for every record, cache file and figure.

A temporary file beside the target is written, flushed to disk (``fsync``),
renamed onto the target, and then the directory is flushed too, so after a
crash or power loss a reader (or a resumed run) sees either the old file or
the whole new one -- never half a record, half a progress file or half a
download, and never a rename that the file system forgot.

What the writer promises about the target:

- a new file gets the permissions the umask gives (``tempfile.mkstemp``
  would give 0600); a file that is replaced keeps its permission bits;
- a symbolic link is written *through*: the file it points to is replaced
  and the link is kept;
- an existing target that is not a regular file (a directory, a device node
  such as ``/dev/full``, a FIFO, a socket) is never replaced:
  :class:`~kernelfit.errors.OutputPathError`.

:func:`check_writable` runs the same checks up front, so that a command can
refuse a bad ``--json PATH`` before hours of work instead of after.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path

from kernelfit.errors import OutputPathError
from kernelfit.formats import jsonable

#: Suffix of the temporary files; the name before it is ``.TARGET.PID.TOKEN``.
TMP_SUFFIX = ".part"


def _target(path) -> Path:
    """The file that a write to ``path`` replaces: symlinks followed, non-files refused."""
    path = Path(path).expanduser()
    # realpath follows every link in the chain (a dangling one too: its target
    # is then created), so the link itself survives the rename.
    target = Path(os.path.realpath(path))
    try:
        mode = target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return target  # absent (a parent that is a file is reported when it is made)
    except OSError as err:
        raise OutputPathError(path, f"cannot be inspected ({err.strerror or err})") from err
    if stat.S_ISDIR(mode):
        raise OutputPathError(path, "is a directory; give a file name inside it "
                                    f"(e.g. {path / 'result.json'})")
    if not stat.S_ISREG(mode):
        kind = ("a character device" if stat.S_ISCHR(mode) else "a block device"
                if stat.S_ISBLK(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket"
                if stat.S_ISSOCK(mode) else "not a regular file")
        raise OutputPathError(path, f"exists and is {kind}, which kernelfit never replaces; "
                                    "give the path of a regular file")
    return target


def _make_parent(path: Path, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputPathError(path, f"its directory {target.parent} does not exist and cannot "
                                    f"be created ({err.strerror or err}); create it or choose "
                                    "another path") from err
    if not target.parent.is_dir():
        raise OutputPathError(path, f"{target.parent} is not a directory")


def _tmp_name(target: Path) -> Path:
    # The writer's pid is in the name, so a cleaner can tell a temporary file of
    # a killed writer (pid gone) from one that a live writer is still filling.
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def _create_tmp(target: Path) -> Path:
    tmp = _tmp_name(target)
    # os.open with 0o666 lets the umask decide (mkstemp would force 0600);
    # O_EXCL so that no two writers ever share a temporary file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(fd)
    return tmp


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(directory) -> list[Path]:
    """Remove the temporary files in ``directory`` whose writer is gone (killed outright).

    A writer's pid is in its temporary file's name, so the files of a writer
    still running beside this one are kept. Names from older kernelfit
    versions (``.NAME.*.tmp``, no pid) are removed too.
    """
    removed = []
    for tmp in [*Path(directory).glob(f".*{TMP_SUFFIX}"), *Path(directory).glob(".*.tmp")]:
        try:
            pid = int(tmp.name.split(".")[-3])
        except (ValueError, IndexError):
            pid = None
        if pid is None or (pid != os.getpid() and not pid_alive(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def fsync_dir(directory) -> None:
    """Flush a directory's entries (a rename into it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # e.g. Windows: directories cannot be opened
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename still happened
    finally:
        os.close(fd)


def check_writable(path) -> Path:
    """Check, before any long work, that an output file can be written at ``path``.

    Creates the missing parent directories and probes the directory that will
    receive the file with a temporary file (removed at once), which is the
    only check that also holds for root, read-only mounts and ACLs.

    Parameters
    ----------
    path : str or Path
        Where a result will be written (e.g. ``--json PATH``).

    Returns
    -------
    Path
        ``path`` (user-expanded), for the caller to write to later.

    Raises
    ------
    OutputPathError
        ``path`` is a directory, exists and is not a regular file (a device
        node, a FIFO), or its directory cannot be created or written to. The
        message says what to do.
    """
    path = Path(path).expanduser()
    target = _target(path)
    _make_parent(path, target)
    try:
        tmp = _create_tmp(target)
    except OSError as err:
        raise OutputPathError(path, f"cannot create a file in {target.parent} "
                                    f"({err.strerror or err}); choose a writable directory "
                                    "or fix its permissions") from err
    tmp.unlink(missing_ok=True)
    return path


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside the target; on success it replaces ``path``.

    The caller writes the temporary file (by name). Then it is fsynced, renamed
    onto the target (the file a symlink points to, if ``path`` is one), and the
    directory is fsynced. On any exception (KeyboardInterrupt included) the
    temporary file is removed and the target is left as it was.

    Raises
    ------
    OutputPathError
        The target is a directory or another non-regular file, or its
        directory cannot be created.
    """
    path = Path(path).expanduser()
    target = _target(path)
    _make_parent(path, target)
    tmp = _create_tmp(target)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        try:  # a replaced file keeps its permission bits (a new one has the umask's)
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        except FileNotFoundError:
            pass
        _target(path)  # something may have appeared at the target meanwhile
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def write_bytes_atomic(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably; check the size on disk.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        The file on disk does not hold ``len(data)`` bytes (disk full), or
        the write failed; the target is then untouched.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
        if os.path.getsize(tmp) != len(data):
            raise OSError(f"{tmp}: {os.path.getsize(tmp)} bytes on disk after writing "
                          f"{len(data)}")
    return Path(path)


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path, obj) -> Path:
    """Write ``obj`` as indented, strict JSON (:func:`~kernelfit.formats.jsonable`) to ``path``
    atomically and durably."""
    return write_text_atomic(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")

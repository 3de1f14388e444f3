"""K's lower tiles on disk: :class:`DiskTileStore`, a resumable build and factor.

A :class:`kernelfit.engine.storage.tiles.HostTileStore` whose storage is a
tile-major ``.npy`` read and written with explicit I/O (:class:`TileFile`),
with a progress record beside it so that a killed build or factor resumes;
and the test hook that kills a run at a chosen tile or panel.
"""

from __future__ import annotations

import json
import os
import signal
import zlib
from pathlib import Path

import numpy as np

from kernelfit.engine.storage.tiles import HostTileStore
from kernelfit.errors import CorruptScratchError, InputError
from kernelfit.formats import read_npy_header

#: Version of the progress record; a record of another one (format 1 kept no
#: checksums, and its diagonal tiles could hold K + shift) is not trusted.
PROGRESS_FORMAT = 2

#: Test hook: ``KERNELFIT_KILL_AFTER=tiles:N`` (or ``panels:N``) kills the process with
#: SIGKILL right after the N-th tile built (panel factored) is recorded on disk, so the
#: tests can check that a killed run resumes to the same bytes.
KILL_ENV = "KERNELFIT_KILL_AFTER"


def _maybe_killed(what: str, count: int) -> None:
    spec = os.environ.get(KILL_ENV, "")
    if spec == f"{what}:{count}":
        os.kill(os.getpid(), signal.SIGKILL)


class TileFile:
    """Tiles in a ``.npy`` file, read and written with explicit I/O (pread / pwrite).

    Not a memory map: mapped pages of a file count in the process's resident
    set, so a factor over a 26 GB K would look (and be limited) like a 26 GB
    process; explicit reads and writes leave caching to the kernel's page cache.
    """

    def __init__(self, path: Path, shape, dtype, *, create: bool):
        self.fd = None
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        self.tile_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        if create:
            with open(self.path, "wb") as fh:
                np.lib.format.write_array_header_2_0(
                    fh, {"descr": self.dtype.str, "fortran_order": False, "shape": self.shape})
                self.offset = fh.tell()
                fh.truncate(self.offset + self.shape[0] * self.tile_bytes)   # sparse
        else:
            with open(self.path, "rb") as fh:
                shape, fortran, dt = read_npy_header(fh)
                self.offset = fh.tell()
            size = self.path.stat().st_size
            if (tuple(shape), fortran, dt) != (self.shape, False, self.dtype) or \
                    size != self.offset + self.shape[0] * self.tile_bytes:
                raise ValueError(f"{self.path} holds {shape} {dt} in {size} bytes")
        self.fd = os.open(self.path, os.O_RDWR)

    def read_into(self, slot: int, dst: np.ndarray) -> None:
        got = os.preadv(self.fd, [memoryview(dst).cast("B")], self.offset + slot * self.tile_bytes)
        if got != self.tile_bytes:
            raise OSError(f"short read of tile {slot} from {self.path} ({got} bytes)")

    def write(self, slot: int, src: np.ndarray) -> int:
        """Write tile ``slot``; returns the CRC-32 of the bytes written."""
        src = np.ascontiguousarray(src, dtype=self.dtype)
        got = os.pwrite(self.fd, memoryview(src).cast("B"), self.offset + slot * self.tile_bytes)
        if got != self.tile_bytes:
            raise OSError(f"short write of tile {slot} to {self.path} ({got} bytes; disk full?)")
        return zlib.crc32(src)

    def flush(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        self.close()


class DiskTileStore(HostTileStore):
    """K's lower tiles in a tile-major ``.npy`` on disk: K beyond RAM, build and factor resumable.

    Beside the file, ``<file>.progress`` (JSON, written atomically) records what
    the bytes hold: the fingerprint of K (kernel, X's digest, n, dtype, tile),
    the CRC-32 of every tile as last written (None: not built), the panels
    factored and the shift they were factored with. A tile is recorded only
    after it is flushed, so a run killed at any point resumes without trusting
    a half-written tile. Left-looking, a factored panel is final: a resumed
    factor with the same shift goes on from the next panel, and a file whose
    panels are all factored is solved with at once.

    The store holds its folder's lock (:mod:`kernelfit.locks`) from the moment
    it is made until :meth:`close`: a second process asking for a store there
    is refused at once. Before anything on disk is reused every recorded tile
    is read back and checked against its CRC; a tile that fails is rebuilt
    (:attr:`repair` says which), and when it lies in a factored panel the
    factor goes back to that panel, because every later panel was computed
    from it. On disk a tile holds K or its factor L, never K + shift: the shift
    is added to a panel's diagonal in RAM as it is loaded.

    Parameters
    ----------
    path : str or Path
        The tile file.
    fingerprint : dict
        What K is; a file recorded with another one is rebuilt from scratch.

    Raises
    ------
    FileInUseError
        Another live process holds the folder (a run on the same scratch).
    """

    kind = "disk tiles"

    def __init__(self, path, n: int, tile: int, dtype: str, backend, fingerprint: dict):
        from kernelfit.locks import hold
        self.path = Path(path)
        self.progress_path = self.path.with_name(self.path.name + ".progress")
        self.fingerprint = fingerprint
        self.lock = hold(self.path.parent, what="the scratch folder", remedy=(
            "Another kernelfit run is building or factoring K there. Wait for it to end, or "
            "give this run another folder (--scratch DIR / Options(scratch_dir=...))."))
        try:
            self._open(n, tile, dtype, backend)
        except BaseException:
            self.lock.release()
            raise

    def _open(self, n: int, tile: int, dtype: str, backend) -> None:
        n_tiles = -(-int(n) // int(tile))
        shape = (n_tiles * (n_tiles + 1) // 2, int(tile), int(tile))
        state = _read_state(self.progress_path, shape[0])
        tiles = None
        if state is not None and state.get("fingerprint") == self.fingerprint:
            try:
                tiles = TileFile(self.path, shape, dtype, create=False)
            except (OSError, ValueError):
                tiles = None                  # damaged or another layout: built again
        if tiles is None:
            state = {"crc32": [None] * shape[0], "factored": 0, "shift": None}
            tiles = TileFile(self.path, shape, dtype, create=True)
        self.crc = list(state["crc32"])
        self.factored = int(state["factored"])
        self.shift = state["shift"]
        self._written: dict[int, int] = {}    # slot -> CRC of what is written, not yet recorded
        self._shifted_diag = None             # K's diagonal + shift, for panels not factored
        super().__init__(n, tile, dtype, backend, tiles=tiles)
        self.repair = self._verify()
        self.resumed = {"tiles": sum(c is not None for c in self.crc), "panels": self.factored}
        self._save()

    def _save(self) -> None:
        from kernelfit.atomic import write_json_atomic
        write_json_atomic(self.progress_path, {
            "format": PROGRESS_FORMAT, "fingerprint": self.fingerprint, "crc32": self.crc,
            "factored": self.factored, "shift": self.shift})

    def _bad_tiles(self) -> list[tuple[int, int]]:
        """Tiles (I, K) whose bytes on disk fail their recorded CRC (one read of the file)."""
        buf = np.empty((self.tile, self.tile), dtype=self.dtype)
        bad = []
        for I in range(self.n_tiles):
            for K in range(I + 1):
                want = self.crc[self.slot(I, K)]
                if want is not None:
                    self.tiles.read_into(self.slot(I, K), buf)
                    if zlib.crc32(buf) != want:
                        bad.append((I, K))
        return bad

    def _verify(self) -> str:
        """Check every recorded tile; forget the bad ones (and what was computed from them).

        A bad tile in a factored panel c takes the factor back to panel c: panels
        c.. then hold L computed from it, so their tiles are rebuilt as K and
        factored again; panels before c never read it. Returns what was found
        and what will be redone ("" when every tile is intact).
        """
        bad = self._bad_tiles()
        if not bad:
            return ""
        first = min(K for _, K in bad)
        for I, K in bad:
            self.crc[self.slot(I, K)] = None
        back = first < self.factored
        if back:
            for I in range(first, self.n_tiles):
                for K in range(first, min(I + 1, self.factored)):
                    self.crc[self.slot(I, K)] = None
            self.factored = first
        shown = ", ".join(f"({I}, {K})" for I, K in bad[:5]) + (
            f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        if len(bad) == 1:
            found = f"tile {shown} of {self.path} fails its checksum; rebuilding it"
        else:
            found = f"tiles {shown} of {self.path} fail their checksums; rebuilding them"
        return found + (f" and the factor from panel {first} on" if back else "")

    def is_built(self, I: int, K: int) -> bool:
        return self.crc[self.slot(I, K)] is not None

    # -- the file's I/O: whole tiles, zero-padded
    def write_tile(self, I: int, K: int, block) -> None:
        full = np.zeros((self.tile, self.tile), dtype=self.dtype)
        full[:block.shape[0], :block.shape[1]] = self.backend.to_host(block)
        self._tile_out(self.slot(I, K), full)

    def _tile_in(self, dst, slot: int) -> None:
        if isinstance(dst, np.ndarray):
            self.tiles.read_into(slot, dst)
            return
        # a torch / CuPy panel: the file is read through a host tile
        host = np.empty((self.tile, self.tile), dtype=self.dtype)
        self.tiles.read_into(slot, host)
        dst[...] = self.backend.asarray(host)

    def _tile_out(self, slot: int, src) -> None:
        host = src if isinstance(src, np.ndarray) else self.backend.to_host(src)
        self._written[slot] = self.tiles.write(slot, host)

    def _record_written(self) -> None:
        """Flush what was written, then record its CRCs (never a CRC before its bytes)."""
        self.tiles.flush()
        for slot, crc in self._written.items():
            self.crc[slot] = crc
        self._written.clear()

    def mark_built(self, I: int, K: int) -> None:
        self._record_written()
        self._save()
        _maybe_killed("tiles", _count(self.crc))

    def begin_factor(self, shift: float) -> int:
        if self.factored and self.shift == shift:
            return self.factored
        if self.factored:              # factored with another shift: K must come back first
            self.restore(self.k_diag)
        self.shift, self.factored = float(shift), 0
        self._save()
        return 0

    def set_diagonal(self, values, first: int = 0) -> None:
        """Keep K's diagonal + shift; :meth:`load_panel` puts it into each panel not factored.

        Not written to disk: the tiles there keep K itself (their CRCs stay those
        of the build), so a factor killed at any point leaves no tile whose
        bytes disagree with its record.
        """
        self._shifted_diag = np.asarray(values, dtype=np.float64)

    def load_panel(self, J: int):
        P = super().load_panel(J)
        if self._shifted_diag is not None and J >= self.factored:
            j0, j1 = self.bounds(J)
            self.backend.set_diagonal(P[:j1 - j0, :], self._shifted_diag[j0:j1])
        return P

    def store_panel(self, J: int, P) -> None:
        super().store_panel(J, P)
        self._record_written()
        self.factored = J + 1
        self._save()
        _maybe_killed("panels", self.factored)

    def abandon(self) -> None:
        """A pivot <= 0: before K's conditioning is blamed, check that the tiles are intact.

        Raises
        ------
        CorruptScratchError
            A tile's bytes changed after they were written (the failed pivot is
            then no fact about K); the bad tiles are recorded for rebuilding.
        """
        super().abandon()
        self._shifted_diag = None
        self.repair = self._verify()
        if self.repair:
            self._save()
            raise CorruptScratchError(
                f"the factorization of K from disk tiles failed, but not for want of a "
                f"positive definite K: {self.repair} at the next run. Bytes on disk changed "
                "after they were written (a failing disk or memory, or a program writing "
                "there without kernelfit's lock). Run the same command again; if this "
                "repeats, move --scratch to another disk and check the memory.")

    def finish(self) -> None:
        super().finish()
        self._shifted_diag = None

    def restore(self, k_diag) -> None:
        if self.rebuild is None:
            raise InputError("a K on disk cannot be restored without its builder "
                             "(DiskTileStore.rebuild)")
        self.crc, self.factored, self.shift = [None] * len(self.crc), 0, None
        self._save()
        self.rebuild(self)

    def close(self, *, remove: bool = False) -> None:
        """Close the file and let go of the folder's lock; ``remove``: delete the tiles first.

        A store that is not removed can be resumed or reused by the next run that
        asks for the same K (its progress record says what it holds).
        """
        self.tiles.close()
        if remove:
            self.path.unlink(missing_ok=True)
            self.progress_path.unlink(missing_ok=True)
        self.lock.release()


def _count(crc) -> int:
    return sum(c is not None for c in crc)


def _read_state(path: Path, n_slots: int):
    """The progress record, or None when absent, unreadable or of another format."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = (isinstance(state, dict) and state.get("format") == PROGRESS_FORMAT
          and {"fingerprint", "crc32", "factored", "shift"} <= set(state)
          and isinstance(state["crc32"], list) and len(state["crc32"]) == n_slots)
    return state if ok else None

"""K's lower tiles on disk: :class:`DiskTileStore`, a resumable build and factor.

A :class:`kernelfit.solvers.tiles.HostTileStore` whose storage is a
tile-major ``.npy`` read and written with explicit I/O (:class:`TileFile`),
with a progress record beside it so that a killed build or factor resumes;
and the test hook that kills a run at a chosen tile or panel.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np

from ..errors import InputError
from .tiles import HostTileStore

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
                fmt = np.lib.format
                read_header = (fmt.read_array_header_1_0 if fmt.read_magic(fh) == (1, 0)
                               else fmt.read_array_header_2_0)
                shape, fortran, dt = read_header(fh)
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

    def write(self, slot: int, src: np.ndarray) -> None:
        src = np.ascontiguousarray(src, dtype=self.dtype)
        os.pwrite(self.fd, memoryview(src).cast("B"), self.offset + slot * self.tile_bytes)

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
    the tiles built, the panels factored and the shift they were factored with.
    A tile is recorded only after it is flushed, so a run killed at any point
    resumes without trusting a half-written tile. Left-looking, a factored panel
    is final: a resumed factor with the same shift goes on from the next panel,
    and a file whose panels are all factored is solved with at once.

    Parameters
    ----------
    path : str or Path
        The tile file.
    fingerprint : dict
        What K is; a file recorded with another one is rebuilt from scratch.
    """

    kind = "disk tiles"

    def __init__(self, path, n: int, tile: int, dtype: str, backend, fingerprint: dict):
        self.path = Path(path)
        self.progress_path = self.path.with_name(self.path.name + ".progress")
        self.fingerprint = fingerprint
        n_tiles = -(-int(n) // int(tile))
        shape = (n_tiles * (n_tiles + 1) // 2, int(tile), int(tile))
        state = _read_state(self.progress_path)
        tiles = None
        if state is not None and state.get("fingerprint") == fingerprint:
            try:
                tiles = TileFile(self.path, shape, dtype, create=False)
            except (OSError, ValueError):
                tiles = None                  # damaged or another layout: built again
        if tiles is None:
            state = {"built": [], "factored": 0, "shift": None}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tiles = TileFile(self.path, shape, dtype, create=True)
        self.built = {int(s) for s in state["built"]}
        self.factored = int(state["factored"])
        self.shift = state["shift"]
        self.resumed = {"tiles": len(self.built), "panels": self.factored}
        super().__init__(n, tile, dtype, backend, tiles=tiles)
        self._save()

    def _save(self) -> None:
        from ..atomic import write_json_atomic
        write_json_atomic(self.progress_path, {
            "fingerprint": self.fingerprint, "built": sorted(self.built),
            "factored": self.factored, "shift": self.shift})

    def is_built(self, I: int, K: int) -> bool:
        return self.slot(I, K) in self.built

    # -- the file's I/O: whole tiles, zero-padded
    def write_tile(self, I: int, K: int, block) -> None:
        full = np.zeros((self.tile, self.tile), dtype=self.dtype)
        full[:block.shape[0], :block.shape[1]] = self.backend.to_host(block)
        self.tiles.write(self.slot(I, K), full)

    def _tile_in(self, dst, slot: int) -> None:
        self.tiles.read_into(slot, dst)

    def _tile_out(self, slot: int, src) -> None:
        self.tiles.write(slot, src)

    def _set_tile_diagonal(self, slot: int, values) -> None:
        D = np.empty((self.tile, self.tile), dtype=self.dtype)
        self.tiles.read_into(slot, D)
        idx = np.arange(len(values))
        D[idx, idx] = values
        self.tiles.write(slot, D)

    def mark_built(self, I: int, K: int) -> None:
        self.tiles.flush()
        self.built.add(self.slot(I, K))
        self._save()
        _maybe_killed("tiles", len(self.built))

    def begin_factor(self, shift: float) -> int:
        if self.factored and self.shift == shift:
            return self.factored
        if self.factored:              # factored with another shift: K must come back first
            self.restore(self.k_diag)
        self.shift, self.factored = float(shift), 0
        self._save()
        return 0

    def store_panel(self, J: int, P) -> None:
        super().store_panel(J, P)
        self.tiles.flush()
        self.factored = J + 1
        self._save()
        _maybe_killed("panels", self.factored)

    def restore(self, k_diag) -> None:
        if self.rebuild is None:
            raise InputError("a K on disk cannot be restored without its builder "
                             "(DiskTileStore.rebuild)")
        self.built, self.factored, self.shift = set(), 0, None
        self._save()
        self.rebuild(self)


def _read_state(path: Path):
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(state, dict) and {"fingerprint", "built", "factored", "shift"} <= set(state)
    return state if ok else None

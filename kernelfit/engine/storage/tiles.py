"""Where K's panels live while the tiled Cholesky works on them.

:func:`kernelfit.engine.solvers.cholesky.tiled_cholesky` asks a store for panels
(rows J0..n of tile column J) and never cares where they are:

- :class:`ResidentStore`: one in-place n x n buffer where the arithmetic
  happens (host memory for NumPy, device memory for CuPy and PyTorch).
  Panels are views; nothing moves; the strict upper triangle keeps K.
- :class:`HostTileStore`: K too large for the device. The lower tiles sit
  in host memory (pinned, for asynchronous copies; or a memory map on disk),
  each tile contiguous, so a tile is one copy; panels are gathered into
  device buffers, the left panels prefetched on a copy stream while the
  GEMMs of the previous one run, and each factored panel is written back
  once. K's upper triangle is not kept: residuals are computed from the data.
- :class:`kernelfit.engine.storage.disk_tiles.DiskTileStore`: the same tiles in a
  file on disk, build and factor resumable (its own module).
"""

from __future__ import annotations

import contextlib

import numpy as np

from kernelfit.engine.backend import backend_of
from kernelfit.engine.sizes import SOLVE_TILE, max_tile
from kernelfit.errors import InputError


def as_store(A, tile: int):
    """A store for ``A``: itself if it is one, else an in-place :class:`ResidentStore`."""
    if isinstance(A, (ResidentStore, HostTileStore)):
        return A
    return ResidentStore(A, tile)


def _check_buffer(A) -> None:
    shape = getattr(A, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != shape[1]:
        raise InputError(f"expected a square 2-D array, got shape {shape}")
    name = str(A.dtype).removeprefix("torch.").rsplit(".", 1)[-1]
    if name not in ("float32", "float64"):
        raise InputError(f"expected a float32 or float64 matrix, got {A.dtype}")
    contiguous = (A.flags.c_contiguous if hasattr(A, "flags") and hasattr(A.flags, "c_contiguous")
                  else A.is_contiguous() if hasattr(A, "is_contiguous") else True)
    if not contiguous:
        raise InputError("the matrix must be C-contiguous (the factorization works in place)")


class ResidentStore:
    """K in one buffer where the arithmetic happens; panels are views of it."""

    kind = "in place"

    def __init__(self, A, tile: int):
        _check_buffer(A)
        self.A = A
        self.backend = backend_of(A)
        self.n = int(A.shape[0])
        self.dtype = self.backend.dtype_name(A)
        # NumPy's LAPACK is LP64: no call may touch 2**31 elements. cuSOLVER and the
        # array API have no such limit.
        limit = max_tile(self.n) if self.backend.name == "numpy" else self.n
        self.tile = int(max(1, min(tile, limit)))
        self.n_tiles = -(-self.n // self.tile)

    def bounds(self, J: int):
        return J * self.tile, min((J + 1) * self.tile, self.n)

    def load_panel(self, J: int):
        j0, j1 = self.bounds(J)
        return self.A[j0:, j0:j1]

    def left_panels(self, J: int):
        # In place, all factored columns update a panel in one GEMM (inner dimension j0).
        j0, _ = self.bounds(J)
        return [self.A[j0:, :j0]] if j0 else []

    def store_panel(self, J: int, P) -> None:
        """Nothing to write back: the panel was a view."""

    def abandon(self) -> None:
        """Nothing to release."""

    def finish(self) -> None:
        """Nothing to flush."""

    def diagonal(self) -> np.ndarray:
        return self.backend.get_diagonal(self.A)

    def begin_factor(self, shift: float) -> int:
        """The first panel to factor: always 0 in memory (nothing outlives a run)."""
        return 0

    def set_diagonal(self, values, first: int = 0) -> None:
        self.backend.set_diagonal(self.A, values)

    def restore(self, k_diag, step: int = 2048) -> None:
        """Copy K's strict upper triangle back below the diagonal (undo a factorization)."""
        A, be, n = self.A, self.backend, self.n
        xp = be.xp
        for i0 in range(0, n, step):
            i1 = min(i0 + step, n)
            for j0 in range(0, i0, step):
                A[i0:i1, j0:j0 + step] = xp.matrix_transpose(A[j0:j0 + step, i0:i1])
            D = A[i0:i1, i0:i1]
            strict = be.tril_mask(i1 - i0) & ~xp.eye(i1 - i0, dtype=xp.bool, device=be.device)
            D[...] = xp.where(strict, xp.matrix_transpose(D), D)
        be.set_diagonal(A, k_diag)

    # -- the solve reads panels of its own width: the factor's tile may be all of K
    @property
    def solve_tile(self) -> int:
        return min(self.n, SOLVE_TILE if self.backend.name == "numpy" else 4 * SOLVE_TILE)

    def solve_bounds(self, J: int):
        return J * self.solve_tile, min((J + 1) * self.solve_tile, self.n)

    def solve_panels(self, reverse: bool = False):
        count = -(-self.n // self.solve_tile)
        for J in (reversed(range(count)) if reverse else range(count)):
            j0, j1 = self.solve_bounds(J)
            yield J, self.A[j0:, j0:j1]


class HostTileStore:
    """K's lower tiles in host memory (or on disk), streamed through the backend's device.

    Parameters
    ----------
    n, tile : int
        Order of K and the tile (panel) width; tiles are tile x tile, the last
        row and column of tiles zero-padded (the padding is never read).
    dtype : str
    backend : Backend
        Where the arithmetic runs (a GPU; or the host itself for a store on disk).
    tiles : host array (n_slots, tile, tile), optional
        The storage (a pinned torch tensor, a NumPy array or memmap); allocated
        (pinned when the backend is a GPU) when omitted. Slot of tile (I, K),
        I >= K: I (I + 1) / 2 + K.
    """

    kind = "host tiles, streamed"

    def __init__(self, n: int, tile: int, dtype: str, backend, tiles=None):
        self.n, self.tile, self.dtype, self.backend = int(n), int(tile), dtype, backend
        self.n_tiles = -(-self.n // self.tile)
        n_slots = self.n_tiles * (self.n_tiles + 1) // 2
        self.tiles = tiles if tiles is not None else self._allocate(n_slots)
        if tuple(self.tiles.shape) != (n_slots, self.tile, self.tile):
            raise InputError(f"tile storage has shape {tuple(self.tiles.shape)}, expected "
                             f"({n_slots}, {self.tile}, {self.tile})")
        self.k_diag = np.ones(self.n)
        self.rebuild = None          # callable(store) that refills the tiles (jitter retry)
        npad = self.n_tiles * self.tile
        self._panel = backend.empty((npad, self.tile), dtype)
        self._left = [backend.empty((npad, self.tile), dtype) for _ in range(2)]
        self._streams = _Streams(backend)

    def _allocate(self, n_slots: int):
        shape = (n_slots, self.tile, self.tile)
        be = self.backend
        if be.name == "torch":
            # the zero padding of the last tiles is never read, so no need to clear it
            return be.torch.empty(shape, dtype=be.dtype(self.dtype), pin_memory=be.on_gpu)
        return np.zeros(shape, dtype=self.dtype)

    def slot(self, I: int, K: int) -> int:
        if I < K:
            raise InputError(f"tile ({I}, {K}) is above the diagonal; only lower tiles are kept")
        return I * (I + 1) // 2 + K

    def bounds(self, J: int):
        return J * self.tile, min((J + 1) * self.tile, self.n)

    # -- filling -------------------------------------------------------------
    def is_built(self, I: int, K: int) -> bool:
        """Whether tile (I, K) already holds K (a resumed build on disk skips it)."""
        return False

    def mark_built(self, I: int, K: int) -> None:
        """Called after each tile is written (a store on disk records it)."""

    def write_tile(self, I: int, K: int, block) -> None:
        """Store the (I, K) block of K (a device array, up to tile x tile) in its slot."""
        rows, cols = block.shape
        dst = self.tiles[self.slot(I, K)]
        if self.backend.name == "torch":
            dst[:rows, :cols].copy_(block, non_blocking=False)
        else:
            dst[:rows, :cols] = self.backend.to_host(block)

    # -- one tile in and out: the storage's own I/O (a file on disk overrides these)
    def _tile_in(self, dst, slot: int) -> None:
        """Tile ``slot`` into ``dst`` (a contiguous tile x tile block of a panel buffer)."""
        if self.backend.name == "torch":
            dst.copy_(self.tiles[slot], non_blocking=True)
        else:
            dst[...] = self.backend.asarray(np.asarray(self.tiles[slot]))

    def _tile_out(self, slot: int, src) -> None:
        """A contiguous tile x tile block of a panel buffer into tile ``slot``."""
        if self.backend.name == "torch":
            self.tiles[slot].copy_(src, non_blocking=True)
        else:
            self.tiles[slot][...] = self.backend.to_host(src)

    def diagonal(self) -> np.ndarray:
        return self.k_diag.copy()

    def begin_factor(self, shift: float) -> int:
        """The first panel to factor (a store on disk may resume a killed factor)."""
        return 0

    def set_diagonal(self, values, first: int = 0) -> None:
        """K's diagonal (plus the shift) into the diagonal tiles of panels ``first`` on."""
        values = np.asarray(values, dtype=np.float64)
        for J in range(first, self.n_tiles):
            j0, j1 = self.bounds(J)
            self._set_tile_diagonal(self.slot(J, J), values[j0:j1])

    def _set_tile_diagonal(self, slot: int, values) -> None:
        D = self.tiles[slot]
        if self.backend.name == "torch":
            D.diagonal()[:len(values)].copy_(self.backend.torch.as_tensor(values))
        else:
            idx = np.arange(len(values))
            D[idx, idx] = values

    def restore(self, k_diag) -> None:
        if self.rebuild is None:
            raise InputError("a streamed K cannot be restored after a failed factorization "
                             "without its builder (HostTileStore.rebuild)")
        self.rebuild(self)
        self.set_diagonal(k_diag)

    # -- panels ------------------------------------------------------------------
    def _gather(self, buf, J: int, K: int, stream=None):
        """Tiles (I, K) for I >= J into ``buf`` rows (I - J) tile..; returns the used view."""
        T = self.tile
        with self._streams.on(stream):
            for i, I in enumerate(range(J, self.n_tiles)):
                self._tile_in(buf[i * T:(i + 1) * T], self.slot(I, K))
        j0, _ = self.bounds(J)
        k0, k1 = self.bounds(K)
        return buf[:self.n - j0, :k1 - k0]

    def load_panel(self, J: int):
        # The buffer may still be read by queued work on the last panel (the solve's
        # GEMMs): the copy stream waits for it before overwriting.
        self._streams.copy_after_compute()
        P = self._gather(self._panel, J, J, self._streams.copy)
        self._streams.wait_copy()
        return P

    def left_panels(self, J: int):
        """Factored panels K < J (rows j0..n), the next one copied while this one is used."""
        s = self._streams
        if J == 0:
            return
        s.copy_after_compute()       # the last panel's GEMMs may still read buffer 0
        pending = self._gather(self._left[0], J, 0, s.copy)
        s.record_copy(0)
        for K in range(J):
            s.wait_copied(K % 2)
            current = pending
            if K + 1 < J:
                # The buffer about to be refilled was read by the GEMMs of panel K - 1.
                s.wait_compute_into_copy((K + 1) % 2)
                pending = self._gather(self._left[(K + 1) % 2], J, K + 1, s.copy)
                s.record_copy((K + 1) % 2)
            yield current
            s.record_compute(K % 2)

    def store_panel(self, J: int, P) -> None:
        """Write the factored panel's tiles back (after the compute that made them)."""
        T = self.tile
        s = self._streams
        s.copy_after_compute()
        with s.on(s.copy):
            for i, I in enumerate(range(J, self.n_tiles)):
                self._tile_out(self.slot(I, J), self._panel[i * T:(i + 1) * T])
        # the next load_panel reuses the buffer: same copy stream, so in order

    def abandon(self) -> None:
        self._streams.synchronize()

    def finish(self) -> None:
        self._streams.synchronize()

    # -- the solve streams the same panels, tile wide
    @property
    def solve_tile(self) -> int:
        return self.tile

    def solve_bounds(self, J: int):
        return self.bounds(J)

    def solve_panels(self, reverse: bool = False):
        for J in (reversed(range(self.n_tiles)) if reverse else range(self.n_tiles)):
            yield J, self.load_panel(J)


class _Streams:
    """A copy stream and events on a CUDA device; every method a no-op elsewhere.

    Without CUDA (NumPy on a disk store, PyTorch on the CPU in CI) the copies
    are synchronous, so the same schedule runs in order.
    """

    def __init__(self, backend):
        self.cuda = backend.name == "torch" and backend.on_gpu
        if self.cuda:
            torch = backend.torch
            self.torch = torch
            self.compute = torch.cuda.current_stream(backend.device)
            self.copy = torch.cuda.Stream(backend.device)
            self.copied = [torch.cuda.Event() for _ in range(2)]
            self.used = [torch.cuda.Event() for _ in range(2)]
        else:
            self.copy = None

    def on(self, stream):
        if self.cuda and stream is not None:
            return self.torch.cuda.stream(stream)
        return contextlib.nullcontext()

    def wait_copy(self) -> None:
        if self.cuda:
            self.compute.wait_stream(self.copy)

    def record_copy(self, b: int) -> None:
        if self.cuda:
            self.copied[b].record(self.copy)

    def wait_copied(self, b: int) -> None:
        if self.cuda:
            self.compute.wait_event(self.copied[b])

    def record_compute(self, b: int) -> None:
        if self.cuda:
            self.used[b].record(self.compute)

    def wait_compute_into_copy(self, b: int) -> None:
        if self.cuda:
            self.copy.wait_event(self.used[b])

    def copy_after_compute(self) -> None:
        if self.cuda:
            self.copy.wait_stream(self.compute)

    def synchronize(self) -> None:
        if self.cuda:
            self.copy.synchronize()
            self.compute.synchronize()

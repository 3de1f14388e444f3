"""K's tiles on disk are managed: one run per scratch folder, checksummed tiles, cleanup.

Tiny fits with ``Options(storage="disk", tile_size=64)`` run the out-of-core
path (5 x 5 tiles) in well under a second. A second process that holds a
lock is a subprocess that says so on a pipe and holds it until its stdin
closes, so nothing waits on the wall clock.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg as sl

from kernelfit import Options
from kernelfit.cli import main
from kernelfit.data import manage
from kernelfit.data.cache import data_home
from kernelfit.engine.backend import get_backend
from kernelfit.engine.gram.panels import build_gram_tiles
from kernelfit.engine.kernels import make_kernel
from kernelfit.engine.plan import plan_fit
from kernelfit.engine.solvers.solve import solve_stored
from kernelfit.engine.storage.build import tile_file
from kernelfit.engine.storage.disk_tiles import DiskTileStore
from kernelfit.engine.storage.operators import KernelOperator
from kernelfit.errors import (
    CorruptScratchError,
    FileInUseError,
    InputError,
    NotPositiveDefiniteError,
)
from kernelfit.locks import LOCK_NAME, hold, holder
from kernelfit.model import KernelInterpolant

N, D, TILE = 300, 5, 64

# Holds FOLDER's lock, says so on stdout, and keeps it until stdin closes.
HOLDER = """
import sys
from kernelfit.locks import hold
lock = hold(sys.argv[1], what="the scratch folder", remedy="")
print("held", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def data(rng):
    return rng.standard_normal((N, D)), rng.standard_normal((N, 3))


def _opts(scratch, **kw):
    return Options(storage="disk", tile_size=TILE, dtype="float64", n_jobs=1,
                   scratch_dir=str(scratch), **kw)


def _fit(X, Y, scratch, **kw):
    return KernelInterpolant(sigma=2.0, lam=1e-3, options=_opts(scratch, **kw)).fit(X, Y)


class _Holder:
    """A second process holding ``folder``'s lock until :meth:`stop` (or killed)."""

    def __init__(self, folder):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def stop(self):
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=60)
        self.proc.stdin.close()


def _flip_low_byte(path, slot, row, col):
    """Flip the lowest mantissa byte of one entry of tile ``slot`` (the file's own layout)."""
    tiles = np.load(path, mmap_mode="r+")
    tiles[slot, row:row + 1, col:col + 1].view(np.uint8)[0, 0] ^= 0x5A
    tiles.flush()
    del tiles


def _slot(I, K):
    return I * (I + 1) // 2 + K


# --- 1. one run per scratch folder ---------------------------------------------------


def test_a_second_run_on_a_held_scratch_is_refused_naming_the_holder(data, tmp_path):
    X, Y = data
    other = _Holder(tmp_path)
    try:
        with pytest.raises(FileInUseError, match=rf"process {other.proc.pid}\b") as err:
            _fit(X, Y, tmp_path)
        assert "--scratch" in str(err.value) and "Wait" in str(err.value)
        assert "jitter" not in str(err.value)
        assert holder(tmp_path) == other.proc.pid
        assert not list(tmp_path.glob("*.tiles.npy"))      # refused before touching anything
    finally:
        other.stop()
    assert holder(tmp_path) is None
    ref = KernelInterpolant(sigma=2.0, lam=1e-3, options=Options(dtype="float64")).fit(X, Y)
    np.testing.assert_allclose(_fit(X, Y, tmp_path).dual_coef_, ref.dual_coef_, rtol=1e-9,
                               atol=1e-9 * np.abs(ref.dual_coef_).max())


def test_a_lock_left_by_a_killed_process_does_not_block(data, tmp_path):
    X, Y = data
    dead = _Holder(tmp_path)
    dead.kill()
    lock = tmp_path / LOCK_NAME
    assert lock.read_text().strip() == str(dead.proc.pid)   # the file stays; the lock does not
    assert holder(tmp_path) is None
    assert _fit(X, Y, tmp_path).solver_info_["storage"] == "disk tiles"
    assert not lock.exists()                                # released by the run that took it


def test_the_lock_is_taken_again_after_its_file_was_removed_by_its_holder(tmp_path):
    first = hold(tmp_path, what="x", remedy="")
    first.release()                                         # removes the file it held
    second = hold(tmp_path, what="x", remedy="")
    assert holder(tmp_path) == os.getpid()
    with pytest.raises(FileInUseError, match="this process"):
        hold(tmp_path, what="x", remedy="")
    second.release()
    assert holder(tmp_path) is None


# --- 2. tiles checksummed, verified on reuse, rebuilt when corrupt ---------------------


def test_a_corrupt_factored_tile_is_found_and_the_factor_redone_from_its_panel(
        data, tmp_path, capsys):
    X, Y = data
    clean = _fit(X, Y, tmp_path / "clean", keep_scratch=True)
    reused = tmp_path / "reused"
    _fit(X, Y, reused, keep_scratch=True)
    path = next(reused.glob("*.tiles.npy"))
    factor_bytes = path.read_bytes()
    _flip_low_byte(path, _slot(3, 1), 5, 7)                   # inside factored panel 1
    capsys.readouterr()
    again = _fit(X, Y, reused, keep_scratch=True)
    err = capsys.readouterr().err
    assert f"tile (3, 1) of {path} fails its checksum; rebuilding it and the factor from " \
           "panel 1 on" in err
    np.testing.assert_array_equal(again.dual_coef_, clean.dual_coef_)     # bit for bit
    assert path.read_bytes() == factor_bytes
    state = json.loads(path.with_name(path.name + ".progress").read_text())
    assert state["factored"] == 5 and None not in state["crc32"]


def _built_store(X, kern, path):
    """K's lower tiles built on disk at ``path`` (a build left unfactored)."""
    store = DiskTileStore(path, N, TILE, "float64", get_backend("numpy"), {"test": 1})
    build_gram_tiles(X, kern, store, options=Options(n_jobs=1))
    return store


def test_a_corrupt_tile_of_k_is_rebuilt_alone(data, tmp_path):
    """A build left unfactored (as a killed run leaves it): only the bad tile is built again."""
    X, Y = data
    kern = make_kernel("gaussian", sigma=2.0)
    be = get_backend("numpy")
    path = tmp_path / "K.tiles.npy"
    store = _built_store(X, kern, path)
    store.close()
    built = path.read_bytes()
    _flip_low_byte(path, _slot(4, 2), 0, 0)
    store = DiskTileStore(path, N, TILE, "float64", be, {"test": 1})
    assert store.repair == f"tile (4, 2) of {path} fails its checksum; rebuilding it"
    assert [s for s, c in enumerate(store.crc) if c is None] == [_slot(4, 2)]
    assert store.resumed == {"tiles": 14, "panels": 0}
    build_gram_tiles(X, kern, store, options=Options(n_jobs=1))
    assert path.read_bytes() == built
    sol = solve_stored(store, Y, lam=1e-3, operator=KernelOperator(kern, X, dtype="float64"))
    store.close(remove=True)
    ref = sl.solve(kern.block(X, X) + 1e-3 * np.eye(N), Y, assume_a="pos")
    np.testing.assert_allclose(sol.alpha, ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())


def test_a_tile_file_with_damaged_header_text_is_built_again(data, tmp_path):
    """The .npy header of K's tile file is text NumPy parses as a literal: damaged so that
    it no longer parses, the file is set aside and K built again, to the same bytes."""
    X, _ = data
    kern = make_kernel("gaussian", sigma=2.0)
    path = tmp_path / "K.tiles.npy"
    _built_store(X, kern, path).close()
    built = path.read_bytes()
    paren = built.index(b")", built.index(b"'shape': ("))
    damaged = bytearray(built)
    damaged[paren] = ord(" ")          # "(60, 60)" -> "(60, 60 ": a bracket never closed
    path.write_bytes(bytes(damaged))
    store = DiskTileStore(path, N, TILE, "float64", get_backend("numpy"), {"test": 1})
    assert store.resumed == {"tiles": 0, "panels": 0}
    build_gram_tiles(X, kern, store, options=Options(n_jobs=1))
    store.close()
    assert path.read_bytes() == built


def test_a_progress_record_without_checksums_is_not_trusted(data, tmp_path):
    X, _ = data
    be = get_backend("numpy")
    path = tmp_path / "K.tiles.npy"
    store = _built_store(X, make_kernel("gaussian", sigma=2.0), path)
    store.close()
    prog = path.with_name(path.name + ".progress")
    old = json.loads(prog.read_text())
    prog.write_text(json.dumps({"fingerprint": old["fingerprint"], "built": list(range(15)),
                                "factored": 0, "shift": None}))          # format 1
    store = DiskTileStore(path, N, TILE, "float64", be, {"test": 1})
    assert store.resumed == {"tiles": 0, "panels": 0}
    store.close(remove=True)


def test_a_failed_factor_of_disk_tiles_checks_them_before_blaming_k(data, tmp_path):
    """Tiles changed mid-run: a checksum error, not "try lam > 0 / --jitter auto"."""
    X, Y = data
    kern = make_kernel("gaussian", sigma=2.0)
    be = get_backend("numpy")
    path = tmp_path / "K.tiles.npy"
    store = _built_store(X, kern, path)
    # Another writer (no lock) puts a huge number below K's diagonal: the Cholesky
    # meets a negative pivot in panel 2.
    tiles = np.load(path, mmap_mode="r+")
    tiles[_slot(2, 2), 4, 3] = 1e6
    tiles.flush()
    del tiles
    op = KernelOperator(kern, X, dtype="float64")
    with pytest.raises(CorruptScratchError) as err:
        solve_stored(store, Y, lam=1e-3, operator=op)
    msg = str(err.value)
    assert f"tile (2, 2) of {path} fails its checksum" in msg and "jitter" not in msg
    store.close()
    store = DiskTileStore(path, N, TILE, "float64", be, {"test": 1})
    assert not store.is_built(2, 2) and store.repair == ""   # recorded as to be rebuilt
    store.close(remove=True)


def test_an_indefinite_k_on_disk_is_still_reported_as_such(rng, tmp_path):
    """Intact tiles: the pivot is K's own, and the advice about lam / jitter stands."""
    X = rng.standard_normal((N, 2))
    kern = make_kernel("linear")                             # rank 2: singular in any dtype
    be = get_backend("numpy")
    store = DiskTileStore(tmp_path / "K.tiles.npy", N, TILE, "float64", be, {"test": 1})
    build_gram_tiles(X, kern, store, options=Options(n_jobs=1))
    with pytest.raises(NotPositiveDefiniteError, match="jitter"):
        solve_stored(store, rng.standard_normal(N), operator=KernelOperator(kern, X))
    store.close()


def test_the_tile_file_is_named_by_data_kernel_and_dtype(data, tmp_path):
    X, _ = data
    opts = _opts(tmp_path)
    plan = plan_fit(N, D, 3, options=opts)
    k = make_kernel("gaussian", sigma=2.0)
    name = tile_file(X, k, plan)[0]
    assert name == tile_file(X.copy(), make_kernel("gaussian", sigma=2.0), plan)[0]
    X2 = X.copy()
    X2[123, 4] = np.nextafter(X2[123, 4], np.inf)            # one ulp of one entry
    others = [tile_file(X2, k, plan)[0],
              tile_file(X, make_kernel("gaussian", sigma=2.0 * (1 + 1e-12)), plan)[0],
              tile_file(X, make_kernel("laplacian", sigma=2.0), plan)[0],
              tile_file(X, make_kernel("polynomial", gamma=0.5, degree=2), plan)[0],
              tile_file(X, make_kernel("polynomial", gamma=0.5, degree=3), plan)[0],
              tile_file(X, k, plan_fit(N, D, 3, options=opts.replace(dtype="float32")))[0],
              tile_file(X, k, plan_fit(N, D, 3, options=opts.replace(tile_size=2 * TILE)))[0]]
    assert len({name, *others}) == 1 + len(others)
    assert all(p.parent == tmp_path for p in others)


# --- 3. scratch removed after success, kept on request or after a failure -------------


def test_tiles_are_removed_after_a_successful_fit(data, tmp_path):
    X, Y = data
    _fit(X, Y, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_keep_scratch_keeps_the_factor_and_the_next_fit_reuses_it(data, tmp_path, capsys):
    X, Y = data
    first = _fit(X, Y, tmp_path, keep_scratch=True, progress=True)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert len(kept) == 2 and kept[0].endswith(".tiles.npy") and kept[1].endswith(".progress")
    capsys.readouterr()
    second = _fit(X, Y, tmp_path, progress=True)
    assert "15 tiles built, 5 panels factored" in capsys.readouterr().err
    assert second.solver_info_["resumed_at_panel"] == 5
    np.testing.assert_array_equal(second.dual_coef_, first.dual_coef_)
    assert list(tmp_path.iterdir()) == []                    # this one did not keep it


def test_a_failed_fit_keeps_its_tiles_and_lets_go_of_the_lock(rng, tmp_path):
    X = rng.standard_normal((N, 2))
    model = KernelInterpolant(kernel="linear", options=_opts(tmp_path))
    with pytest.raises(NotPositiveDefiniteError):
        model.fit(X, rng.standard_normal(N))
    assert len(list(tmp_path.glob("*.tiles.npy"))) == 1
    assert len(list(tmp_path.glob("*.progress"))) == 1
    assert holder(tmp_path) is None and not (tmp_path / LOCK_NAME).exists()


def test_keep_scratch_on_the_command_line(tmp_path):
    from kernelfit.cli import build_parser
    from kernelfit.cli.settings import run_config as config_from_args
    p = build_parser()
    assert config_from_args(p.parse_args(["run"])).options.keep_scratch is False
    assert config_from_args(p.parse_args(["run", "--keep-scratch"])).options.keep_scratch is True
    with pytest.raises(InputError, match="keep_scratch"):
        Options(keep_scratch="yes")


# --- 4. data list / clear scratch -----------------------------------------------------


def _sizes(folder):
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != LOCK_NAME)


def test_data_list_and_clear_scratch(data, tmp_path, monkeypatch, capsys):
    X, Y = data
    home = tmp_path / "home"
    monkeypatch.setenv("KERNELFIT_DATA", str(home))
    KernelInterpolant(sigma=2.0, lam=1e-3, options=Options(
        storage="disk", tile_size=TILE, dtype="float64", keep_scratch=True)).fit(X, Y)
    scratch = home / "scratch"
    size = _sizes(scratch)
    assert size > 15 * TILE * TILE * 8
    row = next(e for e in manage.entries() if e["name"] == "scratch")
    assert row["bytes"] == size and row["files"] == 2 and "not in use" in row["state"]
    capsys.readouterr()
    assert main(["data", "list"]) == 0
    assert any(line.startswith("scratch") and "not in use" in line
               for line in capsys.readouterr().out.splitlines())

    run = _Holder(scratch)                     # a run holds it: listed, and never cleared
    try:
        row = next(e for e in manage.entries() if e["name"] == "scratch")
        assert f"in use by PID {run.proc.pid}" in row["state"]
        for name in ("scratch", "all"):
            with pytest.raises(FileInUseError, match=rf"process {run.proc.pid}\b"):
                manage.clear(name)
        capsys.readouterr()
        assert main(["data", "clear", "scratch"]) == 2
        assert str(run.proc.pid) in capsys.readouterr().err
        assert _sizes(scratch) == size                       # nothing removed
    finally:
        run.stop()

    done = manage.clear("scratch")
    assert [d["path"] for d in done] == [str(scratch)] and done[0]["bytes"] == size
    assert not scratch.exists()


def test_data_clear_all_includes_scratch(data, tmp_path, monkeypatch):
    X, Y = data
    home = tmp_path / "home"
    monkeypatch.setenv("KERNELFIT_DATA", str(home))
    KernelInterpolant(sigma=2.0, lam=1e-3, options=Options(
        storage="disk", tile_size=TILE, dtype="float64", keep_scratch=True)).fit(X, Y)
    (home / "features").mkdir()
    assert main(["data", "clear", "all"]) == 0
    assert not (home / "scratch").exists() and not (home / "features").exists()


# --- 5. paths checked before any work -------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "under a file", "proc"])
def test_a_bad_data_home_is_an_input_error(tmp_path, monkeypatch, capsys, kind):
    f = tmp_path / "a-file"
    f.write_text("x")
    bad = {"file": f, "under a file": f / "sub", "proc": "/proc/self"}[kind]
    why = {"file": "is a file", "under a file": "cannot be created", "proc": "pseudo-file"}[kind]
    with pytest.raises(InputError, match=why):
        data_home(bad)
    monkeypatch.setenv("KERNELFIT_DATA", str(bad))
    with pytest.raises(InputError, match=r"\$KERNELFIT_DATA"):
        data_home()
    monkeypatch.delenv("KERNELFIT_DATA")
    for argv in (["run", "--dataset", "mnist", "--n-train", "50", "--quiet"],
                 ["data", "list"], ["data", "fetch", "mnist", "--quiet"]):
        capsys.readouterr()
        assert main([*argv, "--data-home", str(bad)]) == 2
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["file", "under a file", "proc"])
def test_a_bad_scratch_is_an_input_error_before_any_work(data, tmp_path, capsys, kind):
    f = tmp_path / "a-file"
    f.write_text("x")
    bad = {"file": f, "under a file": f / "sub", "proc": "/proc/self/scratch"}[kind]
    why = {"file": "is a file", "under a file": "cannot be created", "proc": "pseudo-file"}[kind]
    with pytest.raises(InputError, match=why):
        plan_fit(N, D, 3, options=_opts(bad))
    assert main(["run", "--n-train", "200", "--quiet", "--storage", "disk", "--scratch",
                 str(bad)]) == 2
    err = capsys.readouterr().err
    assert "--scratch" in err and why in err and "Traceback" not in err


def test_a_killed_fit_keeps_its_tiles_for_the_resume(tmp_path):
    """SIGKILL mid-factor: tiles and progress stay, the lock does not hold."""
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "kernelfit.cli", "run", "--n-train", "300", "--quiet",
           "--storage", "disk", "--scratch", str(tmp_path / "s"), "--tile-size", str(TILE),
           "--dtype", "float64", "--n-jobs", "1", "--json", str(out)]
    env = {**os.environ, "KERNELFIT_KILL_AFTER": "panels:2"}
    killed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert holder(tmp_path / "s") is None
    prog = next((tmp_path / "s").glob("*.progress"))
    assert json.loads(prog.read_text())["factored"] == 2
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert list((tmp_path / "s").iterdir()) == []            # removed once it succeeded

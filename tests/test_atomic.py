"""kernelfit.atomic: one writer (fsync of file and directory, umask, symlinks, non-files)
and check_writable, the up-front check of an output path."""

from __future__ import annotations

import os
import stat

import pytest

from kernelfit import atomic
from kernelfit.errors import KernelfitError, OutputPathError


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_json_atomic(tmp_path / "a.json", {"x": 1})
        os.umask(0o027)
        atomic.write_text_atomic(tmp_path / "b.txt", "hi")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.json") == 0o644  # mkstemp gave 0600
    assert _mode(tmp_path / "b.txt") == 0o640


def test_replaced_file_keeps_its_mode(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("old")
    os.chmod(p, 0o604)
    atomic.write_text_atomic(p, "new")
    assert p.read_text() == "new" and _mode(p) == 0o604


def test_symlink_is_written_through(tmp_path):
    real = tmp_path / "store" / "real.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    atomic.write_json_atomic(link, {"v": 2})
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text().strip().endswith("}") and '"v": 2' in real.read_text()
    # a dangling link: its target is created, the link kept
    dangling = tmp_path / "d.json"
    dangling.symlink_to(tmp_path / "store" / "new.json")
    atomic.write_text_atomic(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "store" / "new.json").read_text() == "made"
    assert not list(tmp_path.rglob(f"*{atomic.TMP_SUFFIX}"))


def test_non_regular_target_is_never_replaced(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OutputPathError, match="FIFO"):
        atomic.write_text_atomic(fifo, "x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with pytest.raises(OutputPathError, match="FIFO"):
        atomic.check_writable(fifo)
    # a link to a non-file is refused too
    link = tmp_path / "l"
    link.symlink_to(fifo)
    with pytest.raises(OutputPathError):
        atomic.write_text_atomic(link, "x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_device_node_is_refused(tmp_path):
    with pytest.raises(OutputPathError, match="character device"):
        atomic.check_writable("/dev/null")
    with pytest.raises(OutputPathError, match="character device"):
        atomic.write_text_atomic("/dev/null", "x")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_check_writable_directory(tmp_path):
    with pytest.raises(OutputPathError, match="is a directory") as info:
        atomic.check_writable(tmp_path)
    err = info.value
    assert isinstance(err, OSError) and isinstance(err, KernelfitError)
    assert "result.json" in str(err)  # says what to do


def test_check_writable_creates_parent_and_leaves_nothing(tmp_path):
    p = tmp_path / "a" / "b" / "out.json"
    assert atomic.check_writable(p) == p
    assert p.parent.is_dir() and not list(p.parent.iterdir())


def test_check_writable_parent_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match="cannot be created"):
        atomic.check_writable(tmp_path / "f" / "out.json")


def test_check_writable_unwritable_dir(tmp_path, monkeypatch):
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: make the probe fail as a read-only mount does
        real_open = os.open

        def refuse(path, flags, *a):
            if str(path).startswith(str(d)) and flags & os.O_CREAT:
                raise PermissionError(13, "Permission denied")
            return real_open(path, flags, *a)

        monkeypatch.setattr(os, "open", refuse)
    os.chmod(d, 0o555)
    try:
        with pytest.raises(OutputPathError, match="cannot create a file"):
            atomic.check_writable(d / "out.json")
    finally:
        os.chmod(d, 0o755)


def test_fsync_of_file_and_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic.write_text_atomic(tmp_path / "x.txt", "data")
    assert any(atomic.TMP_SUFFIX in s for s in synced), synced  # the file, before the rename
    assert str(tmp_path) in synced                               # the directory, after it


def test_failure_leaves_target_and_no_temporary(tmp_path):
    p = tmp_path / "keep.txt"
    p.write_text("good")
    with pytest.raises(KeyboardInterrupt), atomic.atomic_path(p) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert p.read_text() == "good" and not list(tmp_path.glob(f".*{atomic.TMP_SUFFIX}"))


def test_remove_stale_temporaries_keeps_live_writers(tmp_path):
    mine = tmp_path / f".a.json.{os.getpid()}.abcd{atomic.TMP_SUFFIX}"
    dead = tmp_path / f".b.json.999999999.abcd{atomic.TMP_SUFFIX}"
    old_style = tmp_path / ".c.npy.xyz.tmp"
    keep = tmp_path / "c.npy"
    for f in (mine, dead, old_style, keep):
        f.write_bytes(b"x")
    assert sorted(atomic.remove_stale_temporaries(tmp_path)) == sorted([dead, old_style])
    assert mine.exists() and keep.exists()

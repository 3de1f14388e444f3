"""A saved model is data, never code: forged, old, edited or damaged files are typed errors,
and nothing in them ever runs."""

import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kernelfit.cli import main
from kernelfit.errors import ModelFileError
from kernelfit.pipeline import model_file
from kernelfit.pipeline.saved_model import load_model

FIXTURE = Path(__file__).parent / "fixtures" / "model_v1_pickle.kfm"


class Payload:
    """Unpickling this creates the file ``marker`` (via ``open(marker, "w")``)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A genuine saved model (randconv, so it has feature-state arrays too)."""
    path = tmp_path_factory.mktemp("good") / "m.kfm"
    assert main(["run", "--quiet", "--n-train", "60", "--n-test", "20", "--features",
                 "randconv", "--filters", "4", "--feature-param", "patch_size=3",
                 "--feature-param", "n_fit_patches=200", "--no-feature-cache",
                 "--save-model", str(path)]) == 0
    return path


def members(path) -> tuple[dict, dict]:
    """(header, raw .npy members) of a model file."""
    with zipfile.ZipFile(path) as z:
        raw = {n: z.read(n) for n in z.namelist()}
    return json.loads(raw.pop("header.json")), raw


def rewrite(path, header, raw, compression=zipfile.ZIP_STORED):
    """A model file with this header and these members (CRCs correct: a deliberate edit)."""
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr("header.json", json.dumps(header))
        for name, blob in raw.items():
            z.writestr(name, blob)
    return path


def npy(arr, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


@pytest.fixture
def no_unpickling(monkeypatch):
    """Any attempt to unpickle fails the test."""
    # Modules that subclass pickle.Unpickler are imported first, so that their class
    # keeps the real base once the patch is undone.
    import kernelfit.data.cifar10  # noqa: F401

    def refuse(*a, **k):
        pytest.fail("something was unpickled")

    class RefusingUnpickler(pickle.Unpickler):
        def __init__(self, *a, **k):
            refuse()

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)


# -- format 1 (pickle) files are refused unread ----------------------------------------------

def test_a_model_saved_by_the_pickle_format_is_refused_unread(no_unpickling, capsys):
    assert FIXTURE.read_bytes().startswith(b"KERNELFIT-MODEL\n")
    with pytest.raises(ModelFileError, match=r"older kernelfit .*pickle.*refit and saved again"):
        load_model(FIXTURE)
    assert main(["predict", "--model", str(FIXTURE)]) == 2
    assert "older kernelfit" in capsys.readouterr().err


def test_a_forged_pickle_file_with_a_correct_checksum_runs_nothing(tmp_path, no_unpickling,
                                                                   capsys):
    """The old layout with its header and sha256 recomputed over a payload that would
    create a file: refused as format 1, and the file never appears."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Payload(marker))
    header = {"format": 1, "kernelfit": "0.1.0", "bytes": len(payload),
              "sha256": hashlib.sha256(payload).hexdigest()}
    evil = tmp_path / "evil.kfm"
    evil.write_bytes(b"KERNELFIT-MODEL\n" + json.dumps(header).encode() + b"\n" + payload)
    assert main(["predict", "--model", str(evil)]) == 2
    assert "older kernelfit" in capsys.readouterr().err
    with pytest.raises(ModelFileError):
        load_model(evil)
    assert not marker.exists()


# -- pickles inside the new layout are refused before a byte of them is read ----------------

def test_a_pickled_object_array_in_place_of_an_array_runs_nothing(good, tmp_path,
                                                                  no_unpickling):
    marker = tmp_path / "pwned"
    header, raw = members(good)
    raw["estimator.X_fit.npy"] = npy(np.array([Payload(marker)], dtype=object),
                                     allow_pickle=True)
    with pytest.raises(ModelFileError, match="X_fit.npy holds Python objects"):
        load_model(rewrite(tmp_path / "evil.kfm", header, raw))
    assert not marker.exists()


def test_an_object_dtype_in_the_header_is_refused(good, tmp_path, no_unpickling):
    marker = tmp_path / "pwned"
    header, raw = members(good)
    raw["estimator.X_fit.npy"] = npy(np.array([Payload(marker)], dtype=object),
                                     allow_pickle=True)
    header["arrays"]["estimator.X_fit"].update(dtype="|O", shape=[1], bytes=8)
    with pytest.raises(ModelFileError, match=r"estimator.X_fit.dtype must be a numeric"):
        load_model(rewrite(tmp_path / "evil.kfm", header, raw))
    assert not marker.exists()


def test_an_npz_of_pickled_objects_is_not_a_model(tmp_path, no_unpickling, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.kfm"
    with open(evil, "wb") as fh:
        np.savez(fh, X_fit=np.array([Payload(marker)], dtype=object))
    assert main(["predict", "--model", str(evil)]) == 2
    assert "no header.json" in capsys.readouterr().err
    assert not marker.exists()


def test_loading_never_imports_pickle(good, no_unpickling):
    """Not only not called: the loader has no pickle in reach (a later edit that adds
    one shows up here)."""
    import kernelfit.pipeline.model_file as mf
    import kernelfit.pipeline.saved_model as sm

    assert not hasattr(mf, "pickle") and not hasattr(sm, "pickle")
    assert load_model(good).feature_map.name == "randconv"


# -- header fields: type, range, version --------------------------------------------------

X = ("arrays", "estimator.X_fit")


@pytest.mark.parametrize("keys, value, says", [
    ((*X, "bytes"), "182771", r"X_fit.bytes must be an integer >= 0, got '182771'"),
    ((*X, "bytes"), 12.0, "X_fit.bytes must be an integer"),
    ((*X, "bytes"), True, "X_fit.bytes must be an integer"),
    ((*X, "bytes"), 8, r"X_fit.bytes = 8 is not what"),
    ((*X, "shape"), [60, "64"], r"X_fit.shape must be an integer"),
    ((*X, "shape"), "60,64", "X_fit.shape must be list"),
    ((*X, "sha256"), 0, "X_fit.sha256 must be str"),
    ((*X, "dtype"), "float64", "X_fit.dtype must be a numeric NumPy dtype"),
    (("estimator", "fitted", "norm_"), "10.5", "norm_ must be a finite number >= 0"),
    (("estimator", "fitted", "norm_"), -1.0, "norm_ must be a finite number >= 0"),
    (("estimator", "fitted", "train_error_"), 2.0, r"train_error_ must be .* in \[0, 1\]"),
    (("estimator", "fitted", "n_iter_"), 1.5, "n_iter_ must be an integer"),
    (("estimator", "fitted", "converged_"), "yes", "converged_ must be bool"),
    (("estimator", "params", "lam"), "0", "'lam' parameter"),
    (("estimator", "params", "degree"), 3.0, "'degree' parameter"),
    (("estimator", "options", "block_size"), "1024", "block_size must be an integer"),
    (("estimator", "options", "memory_limit"), -5, "memory_limit must be an integer >= 1"),
    (("estimator", "kernel", "gamma"), "0.1", "gamma must be a positive finite number"),
    (("estimator", "kernel", "name"), "linear", "is not the estimator's kernel"),
    (("estimator", "backend", "name"), "cuda", "backend.name must be one of"),
    (("features", "params", "n_filters"), "4", "rebuild a map whose parameters"),
    (("features", "params", "n_filters"), 4.5, "rebuild a map whose parameters"),
    (("features", "params", "n_filters"), 5, r"filters_ must be float32 \(5, 9\)"),
    (("features", "input_shape"), [8, "8"], "input shape must be 1 to 3 positive integers"),
    (("settings", "n_train"), "60", "n_train must be int"),
    (("settings", "n_train"), 61, "do not match its arrays"),
    (("settings", "seed"), -1, "seed must be an integer >= 0"),
    (("settings", "randomization"), "labels:2", "data settings cannot be rebuilt"),
    (("kernelfit",), 1, "kernelfit must be str"),
])
def test_every_header_field_is_type_and_range_checked(good, tmp_path, keys, value, says):
    header, raw = members(good)
    node = header
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    with pytest.raises(ModelFileError, match=says) as err:
        load_model(rewrite(tmp_path / "bad.kfm", header, raw))
    assert type(err.value) is ModelFileError
    assert "Save the model again" in str(err.value)


@pytest.mark.parametrize("version", ["9.9.9", 3, 1, "2", 2.0, None])
def test_another_format_version_is_refused_naming_both(good, tmp_path, version):
    header, raw = members(good)
    header["version"] = version
    with pytest.raises(ModelFileError, match=rf"format version {version!r}.*reads format "
                                             r"version 2 only"):
        load_model(rewrite(tmp_path / "v.kfm", header, raw))


# -- the arrays must be exactly what the header says ----------------------------------------

def test_an_edited_array_with_a_correct_crc_fails_its_sha256(good, tmp_path):
    header, raw = members(good)
    blob = bytearray(raw["estimator.dual_coef.npy"])
    blob[-1] ^= 0x01
    raw["estimator.dual_coef.npy"] = bytes(blob)
    with pytest.raises(ModelFileError, match="dual_coef.npy does not match its recorded sha256"):
        load_model(rewrite(tmp_path / "e.kfm", header, raw))


def test_an_array_of_another_shape_than_its_header_is_refused(good, tmp_path):
    header, raw = members(good)
    raw["estimator.classes.npy"] = npy(np.arange(11))
    with pytest.raises(ModelFileError, match=r"classes.npy is int64 \(11,\).*header says"):
        load_model(rewrite(tmp_path / "s.kfm", header, raw))


def test_arrays_that_disagree_with_each_other_are_refused(good, tmp_path):
    """Consistent with the header, inconsistent with the model: one class too few."""
    header, raw = members(good)
    classes = np.arange(9)
    raw["estimator.classes.npy"] = npy(classes)
    header["arrays"]["estimator.classes"] = model_file.array_entry(classes)
    with pytest.raises(ModelFileError, match="arrays do not agree"):
        load_model(rewrite(tmp_path / "d.kfm", header, raw))


@pytest.mark.parametrize("change, says", [
    (lambda h, r: r.pop("features.A_aug_.npy"), r"missing features.A_aug_.npy"),
    (lambda h, r: r.__setitem__("extra.npy", npy(np.zeros(2))), "not listed: extra.npy"),
    (lambda h, r: h["arrays"].pop("features.A_aug_"), "not listed: features.A_aug_.npy"),
])
def test_members_must_be_exactly_those_listed(good, tmp_path, change, says):
    header, raw = members(good)
    change(header, raw)
    with pytest.raises(ModelFileError, match=says):
        load_model(rewrite(tmp_path / "m.kfm", header, raw))


def test_a_compressed_member_is_refused(good, tmp_path):
    header, raw = members(good)
    path = rewrite(tmp_path / "z.kfm", header, raw, compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(ModelFileError, match="compressed"):
        load_model(path)


def test_a_header_with_nan_or_not_json_is_damaged(good, tmp_path):
    header, raw = members(good)
    with zipfile.ZipFile(tmp_path / "n.kfm", "w") as z:
        z.writestr("header.json", json.dumps(header).replace('"train_error_": 0.0',
                                                             '"train_error_": NaN'))
        for name, blob in raw.items():
            z.writestr(name, blob)
    with pytest.raises(ModelFileError, match="damaged header.*NaN"):
        load_model(tmp_path / "n.kfm")


def test_every_truncation_is_a_model_file_error(good, tmp_path):
    blob = good.read_bytes()
    bad = tmp_path / "t.kfm"
    for cut in range(0, len(blob), max(1, len(blob) // 97)):
        bad.write_bytes(blob[:cut])
        with pytest.raises(ModelFileError):
            load_model(bad)


def test_a_flipped_byte_anywhere_is_an_error_or_changes_nothing(good, tmp_path):
    """Damage is refused, or falls in bytes nothing reads (zip timestamps, padding): then
    the model loaded is the genuine one, array for array."""
    blob = good.read_bytes()
    genuine = load_model(good)
    bad = tmp_path / "f.kfm"
    rng = np.random.default_rng(0)
    refused = 0
    for pos in rng.choice(len(blob), 150, replace=False):
        damaged = bytearray(blob)
        damaged[pos] ^= 1 << int(rng.integers(8))
        bad.write_bytes(bytes(damaged))
        try:
            m = load_model(bad)
        except ModelFileError:
            refused += 1
            continue
        np.testing.assert_array_equal(m.estimator.X_fit_, genuine.estimator.X_fit_)
        np.testing.assert_array_equal(m.estimator.dual_coef_, genuine.estimator.dual_coef_)
        np.testing.assert_array_equal(m.feature_map.A_aug_, genuine.feature_map.A_aug_)
        assert m.estimator.kernel_ == genuine.estimator.kernel_
    assert refused > 100


def test_every_damaged_byte_of_an_array_header_is_refused_or_harmless(good, tmp_path):
    """Each byte of every member's .npy header (the text NumPy parses as a literal), with
    one bit flipped: a ModelFileError, or the genuine arrays (a space turned into another
    space-like byte NumPy still reads)."""
    blob = good.read_bytes()
    genuine = load_model(good)
    with zipfile.ZipFile(good) as z:
        members = [i for i in z.infolist() if i.filename.endswith(".npy")]
    assert members
    bad = tmp_path / "h.kfm"
    tried = 0
    for info in members:
        # The member's data starts after its local header: 30 bytes, then the name and
        # the extra field, whose lengths sit at offsets 26 and 28.
        o = info.header_offset
        start = (o + 30 + int.from_bytes(blob[o + 26:o + 28], "little")
                 + int.from_bytes(blob[o + 28:o + 30], "little"))
        assert blob[start:start + 6] == b"\x93NUMPY"
        end = start + 10 + int.from_bytes(blob[start + 8:start + 10], "little")
        for pos in range(start, end):
            for bit in (0, 5):
                damaged = bytearray(blob)
                damaged[pos] ^= 1 << bit
                bad.write_bytes(bytes(damaged))
                tried += 1
                try:
                    m = load_model(bad)
                except ModelFileError:
                    continue
                np.testing.assert_array_equal(m.estimator.dual_coef_,
                                              genuine.estimator.dual_coef_)
                np.testing.assert_array_equal(m.estimator.X_fit_, genuine.estimator.X_fit_)
    assert tried > 200


V2_FIXTURE = Path(__file__).parent / "fixtures" / "model_v2_before_engine_move.kfm"


def test_a_model_saved_before_the_engine_move_loads_and_predicts_as_a_refit():
    """Written by `kernelfit run --n-train 300 --n-test 100 --save-model` before the modules
    moved into kernelfit/engine, pipeline and studies (commit 8e86237): it loads, and its
    predictions equal those of the same run fitted now."""
    from kernelfit.pipeline.run import RunConfig, fit_run, prepare

    model = load_model(V2_FIXTURE)
    assert model.settings["n_train"] == 300
    fitted = fit_run(RunConfig(n_train=300, n_test=100))
    data = prepare(RunConfig(n_train=300, n_test=100))
    X = model.feature_map.transform(data.test_images)
    np.testing.assert_array_equal(model.estimator.predict(X), fitted.estimator.predict(
        fitted.feature_map.transform(data.test_images)))
    np.testing.assert_allclose(model.estimator.dual_coef_, fitted.estimator.dual_coef_,
                               rtol=1e-10, atol=1e-12)

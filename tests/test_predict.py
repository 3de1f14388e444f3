"""`kernelfit run --save-model` and `kernelfit predict`: a saved model predicts as it did."""

import json
import zipfile

import numpy as np
import pytest

from kernelfit.cli import main
from kernelfit.errors import InputError, ModelFileError
from kernelfit.pipeline.saved_model import load_model, save_model

RUN = ["run", "--quiet", "--n-train", "400", "--n-test", "150", "--sigma", "3"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved digits model and its run record."""
    folder = tmp_path_factory.mktemp("model")
    model, record = folder / "digits.kfm", folder / "run.json"
    assert main([*RUN, "--save-model", str(model), "--json", str(record)]) == 0
    return model, json.loads(record.read_text())


def test_predict_reproduces_the_runs_test_error(saved, tmp_path, capsys):
    model, record = saved
    out = tmp_path / "p.json"
    assert main(["predict", "--model", str(model), "--n-test", "150", "--quiet",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["test_error"] == record["test_error"]
    assert result["n_test"] == 150 and result["dataset"] == "digits"
    printed = capsys.readouterr().out
    assert f"test error   {100 * record['test_error']:.2f}%" in printed
    assert "sigma=3" in printed


@pytest.mark.parametrize("features, params", [
    ("raw", {"whiten": True}),
    ("gabor", {"pool_grid": 4, "n_orientations": 4}),
    ("scattering", {"J": 1, "L": 4}),
    ("randconv", {"n_filters": 6, "patch_size": 3, "n_fit_patches": 300}),
])
def test_a_loaded_model_predicts_exactly_what_the_fitted_run_did(features, params, tmp_path):
    """Every front end: the rebuilt map gives the same features and the rebuilt estimator
    the same outputs, bit for bit, as the objects of the run that was saved."""
    from kernelfit.pipeline.run import RunConfig, fit_run, prepare

    config = RunConfig(n_train=60, n_test=40, seed=3, features=features, feature_params=params,
                       feature_cache=False)
    fitted = fit_run(config)
    path = save_model(tmp_path / "m.kfm", fitted)
    with zipfile.ZipFile(path) as z:    # numbers and text only: JSON and .npy members
        assert all(n == "header.json" or n.endswith(".npy") for n in z.namelist())
    m = load_model(path)
    images = prepare(config).test_images
    F_fit = fitted.feature_map.transform(images)
    F_loaded = m.feature_map.transform(images)
    np.testing.assert_array_equal(F_loaded, F_fit)
    np.testing.assert_array_equal(m.estimator.decision_function(F_loaded),
                                  fitted.estimator.decision_function(F_fit))
    np.testing.assert_array_equal(m.estimator.predict(F_loaded), fitted.estimator.predict(F_fit))
    assert m.feature_map.params == fitted.feature_map.params
    assert m.estimator.kernel_ == fitted.estimator.kernel_
    assert m.estimator.options == fitted.estimator.options
    assert m.estimator.norm_ == fitted.estimator.norm_
    assert m.record == fitted.record.to_dict()
    for name, arr in fitted.feature_map.state_arrays().items():
        np.testing.assert_array_equal(getattr(m.feature_map, name), arr)
        assert getattr(m.feature_map, name).dtype == arr.dtype


def test_damaged_array_bytes_are_caught_by_the_sha256(saved, tmp_path, capsys):
    import struct

    blob = bytearray(saved[0].read_bytes())
    with zipfile.ZipFile(saved[0]) as z:
        off = z.getinfo("estimator.dual_coef.npy").header_offset
    # the last byte of dual_coef's member: its data, past the local and .npy headers
    name_len, extra_len, = struct.unpack("<HH", blob[off + 26:off + 30])
    with zipfile.ZipFile(saved[0]) as z:
        size = z.getinfo("estimator.dual_coef.npy").file_size
    blob[off + 30 + name_len + extra_len + size - 1] ^= 0xFF
    bad = tmp_path / "tampered.kfm"
    bad.write_bytes(bytes(blob))
    assert main(["predict", "--model", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kernelfit: error:")
    assert "estimator.dual_coef.npy" in err and ("sha256" in err or "CRC" in err)


@pytest.mark.parametrize("damage, says", [
    (lambda b: b[:-10], "truncated or damaged"),
    (lambda b: b[:len(b) // 2], "truncated or damaged"),
    (lambda b: b"not a model at all", "not a kernelfit model file"),
    (lambda b: b"", "not a kernelfit model file"),
])
def test_damaged_files_are_typed_errors(saved, tmp_path, damage, says):
    bad = tmp_path / "bad.kfm"
    bad.write_bytes(damage(saved[0].read_bytes()))
    with pytest.raises(ModelFileError, match=says):
        load_model(bad)


def test_a_missing_file_is_a_clean_error(tmp_path):
    with pytest.raises(InputError, match="no model file"):
        load_model(tmp_path / "nothing.kfm")
    with pytest.raises(InputError, match="is a directory"):
        load_model(tmp_path)


def test_a_streamed_run_cannot_be_saved_and_says_so_before_the_fit(tmp_path, capsys):
    assert main(["run", "--quiet", "--stream", "--save-model", str(tmp_path / "m.kfm")]) == 2
    err = capsys.readouterr().err
    assert "streamed K" in err and "--no-stream" in err
    assert not (tmp_path / "m.kfm").exists()


def test_save_model_to_a_directory_fails_before_the_fit(tmp_path, monkeypatch, capsys):
    import kernelfit.pipeline.run as runmod

    monkeypatch.setattr(runmod, "prepare", lambda *a, **k: pytest.fail("the fit ran"))
    assert main(["run", "--save-model", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_a_run_that_decides_to_stream_refuses_to_save_before_the_gram(monkeypatch):
    import kernelfit.engine.gram.stream as gs
    from kernelfit.pipeline.run import RunConfig, fit_run

    monkeypatch.setattr(gs, "build_gram_streamed", lambda *a, **k: pytest.fail("K was built"))
    with pytest.raises(InputError, match="streamed K"):
        fit_run(RunConfig(n_train=100, n_test=20, features="randconv",
                          feature_params={"n_filters": 4}, stream=True), refuse_streamed=True)


def test_a_model_that_cannot_be_written_keeps_the_table(tmp_path, monkeypatch, capsys):
    import errno

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", disk_full)
    path = tmp_path / "m.kfm"
    assert main([*RUN, "--save-model", str(path)]) == 2
    captured = capsys.readouterr()
    assert "test error" in captured.out
    assert "the model could not be written" in captured.err and "No space" in captured.err
    assert list(tmp_path.iterdir()) == []       # no file, no temporary left behind


def test_predicting_images_of_another_shape_is_a_clear_error(saved, monkeypatch):
    from kernelfit.pipeline import run as runmod
    from kernelfit.pipeline.saved_model import predict_dataset

    real = runmod.prepare

    def bigger_images(config):
        data = real(config)
        data.test_images = np.zeros((len(data.test_labels), 12, 12), np.float32)
        return data

    monkeypatch.setattr(runmod, "prepare", bigger_images)
    with pytest.raises(InputError, match=r"shape \(8, 8\).*\(12, 12\)"):
        predict_dataset(load_model(saved[0]), "digits", n_test=50)

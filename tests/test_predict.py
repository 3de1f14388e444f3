"""`kernelfit run --save-model` and `kernelfit predict`: a saved model predicts as it did."""

import json

import pytest

from kernelfit.cli import main
from kernelfit.errors import InputError, ModelFileError
from kernelfit.experiments.saved_model import MAGIC, load_model

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


def test_loaded_model_predicts_what_the_fit_predicted(saved):
    import numpy as np

    from kernelfit.experiments.run import RunConfig, prepare

    m = load_model(saved[0])
    assert m.settings["n_train"] == 400 and m.estimator.kernel_.params["sigma"] == 3.0
    data = prepare(RunConfig(n_train=400, n_test=150))
    pred = m.estimator.predict(m.feature_map.transform(data.test_images))
    assert np.mean(pred != data.test_labels) == saved[1]["test_error"]


def test_a_modified_file_is_refused_before_unpickling(saved, tmp_path, capsys):
    blob = bytearray(saved[0].read_bytes())
    blob[-100] ^= 0xFF
    bad = tmp_path / "tampered.kfm"
    bad.write_bytes(bytes(blob))
    assert main(["predict", "--model", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kernelfit: error:") and "sha256" in err


@pytest.mark.parametrize("damage, says", [
    (lambda b: b[:-10], "truncated"),
    (lambda b: b"not a model at all", "not a kernelfit model file"),
    (lambda b: MAGIC + b'{"format": 99, "bytes": 1, "sha256": "x"}\n' + b"x", "format 99"),
    (lambda b: MAGIC + b"{garbage\n" + b[200:], "damaged header"),
])
def test_damaged_files_are_typed_errors(saved, tmp_path, damage, says):
    bad = tmp_path / "bad.kfm"
    bad.write_bytes(damage(saved[0].read_bytes()))
    with pytest.raises(ModelFileError, match=says):
        load_model(bad)


def test_a_missing_file_is_a_clean_error(tmp_path):
    with pytest.raises(InputError, match="no model file"):
        load_model(tmp_path / "nothing.kfm")


def test_a_streamed_run_cannot_be_saved_and_says_so_before_the_fit(tmp_path, capsys):
    assert main(["run", "--quiet", "--stream", "--save-model", str(tmp_path / "m.kfm")]) == 2
    err = capsys.readouterr().err
    assert "streamed K" in err and "--no-stream" in err
    assert not (tmp_path / "m.kfm").exists()


def test_save_model_to_a_directory_fails_before_the_fit(tmp_path, monkeypatch, capsys):
    import kernelfit.experiments.run as runmod

    monkeypatch.setattr(runmod, "prepare", lambda *a, **k: pytest.fail("the fit ran"))
    assert main(["run", "--save-model", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_a_run_that_decides_to_stream_refuses_to_save_before_the_gram(monkeypatch):
    import kernelfit.gram_stream as gs
    from kernelfit.experiments.run import RunConfig, fit_run

    monkeypatch.setattr(gs, "build_gram_streamed", lambda *a, **k: pytest.fail("K was built"))
    with pytest.raises(InputError, match="streamed K"):
        fit_run(RunConfig(n_train=100, n_test=20, stream=True), refuse_streamed=True)


def test_a_model_that_does_not_pickle_keeps_the_table(tmp_path, monkeypatch, capsys):
    import pickle

    import kernelfit.experiments.saved_model as sm

    def refuse(*a, **k):
        raise pickle.PicklingError("Can't pickle <class 'Op'>")

    monkeypatch.setattr(sm.pickle, "dumps", refuse)
    path = tmp_path / "m.kfm"
    assert main([*RUN, "--save-model", str(path)]) == 2
    captured = capsys.readouterr()
    assert "test error" in captured.out
    assert "the model could not be written" in captured.err and "does not pickle" in captured.err
    assert not path.exists()


def test_predicting_images_of_another_shape_is_a_clear_error(saved, monkeypatch):
    import numpy as np

    from kernelfit.experiments import run as runmod
    from kernelfit.experiments.saved_model import predict_dataset

    real = runmod.prepare

    def bigger_images(config):
        data = real(config)
        data.test_images = np.zeros((len(data.test_labels), 12, 12), np.float32)
        return data

    monkeypatch.setattr(runmod, "prepare", bigger_images)
    with pytest.raises(InputError, match=r"shape \(8, 8\).*\(12, 12\)"):
        predict_dataset(load_model(saved[0]), "digits", n_test=50)

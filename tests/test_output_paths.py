"""Output paths are checked before any work: never an input, never the data cache, never
twice in one command, never empty; a symbolic link is named with its target."""

import os

import numpy as np
import pytest

from kernelfit.cli import main
from kernelfit.errors import InputError, OutputPathError
from kernelfit.pipeline.outputs import check_outputs


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty default data cache root of its own (``$KERNELFIT_DATA``)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("KERNELFIT_DATA", str(root))
    return root


@pytest.fixture
def victim(tmp_path):
    """A user dataset, ``npz:PATH``."""
    rng = np.random.default_rng(0)
    path = tmp_path / "victim.npz"
    np.savez(path, X_train=rng.random((30, 4)), y_train=np.arange(30) % 3,
             X_test=rng.random((10, 4)), y_test=np.arange(10) % 3)
    return path


@pytest.fixture
def no_fit(monkeypatch):
    """A run that starts fails the test: the check must come first."""
    import kernelfit.pipeline.run as runmod

    monkeypatch.setattr(runmod, "prepare", lambda *a, **k: pytest.fail("the work started"))


def test_the_input_dataset_is_never_an_output(victim, home, no_fit, capsys):
    before = victim.read_bytes()
    assert main(["run", "--dataset", f"npz:{victim}", "--json", str(victim)]) == 2
    err = capsys.readouterr().err
    assert f"the input data of --dataset npz:{victim}" in err and "--json" in err
    assert victim.read_bytes() == before


def test_paths_are_compared_resolved(victim, home, no_fit, tmp_path, monkeypatch, capsys):
    """A relative path, a `..` detour: the same file is still the same file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    assert main(["run", "--dataset", "npz:victim.npz", "--save-model",
                 "sub/../victim.npz"]) == 2
    assert "the input data" in capsys.readouterr().err
    assert victim.read_bytes()[:2] == b"PK"


def test_a_symlink_to_an_input_is_named_with_its_target(victim, home, no_fit, tmp_path,
                                                        capsys):
    link = tmp_path / "result.json"
    link.symlink_to(victim)
    assert main(["run", "--dataset", f"npz:{victim}", "--json", str(link)]) == 2
    err = capsys.readouterr().err
    assert f"{link} (a symbolic link to {victim}" in err and "input data" in err


def test_a_directory_on_the_way_that_is_a_link_is_named(victim, home, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "via").symlink_to(real)
    with pytest.raises(OutputPathError, match=r"via/.*which leads to .*real/x\.kfm.*data cache"):
        check_outputs({"--save-model": tmp_path / "via" / "x.kfm"}, data_home=real)


def test_two_outputs_of_one_run_cannot_share_a_file(home, no_fit, tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "--json", str(out), "--save-model", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--json and --save-model both name" in err
    assert not out.exists()


@pytest.mark.parametrize("option", ["--json", "--save-model"])
def test_an_empty_output_path_asks_for_a_file_name(option, home, no_fit, capsys):
    assert main(["run", option, ""]) == 2
    err = capsys.readouterr().err
    assert f"{option} was given an empty path; give a file name" in err
    with pytest.raises(InputError, match="give a directory name"):
        check_outputs(dirs={"--out": " "})


def test_nothing_is_written_into_the_data_cache(home, no_fit, tmp_path, capsys):
    manifest = home / "mnist" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"format": 1}')
    # the default root ($KERNELFIT_DATA) and the one --data-home names
    assert main(["run", "--save-model", str(manifest)]) == 2
    assert "kernelfit's data cache" in capsys.readouterr().err
    other = tmp_path / "other-home"
    assert main(["run", "--data-home", str(other), "--json", str(other / "r.json")]) == 2
    assert f"lies in kernelfit's data cache ({other.resolve()})" in capsys.readouterr().err
    assert manifest.read_text() == '{"format": 1}'
    assert not other.exists()


def test_idx_input_directories_are_not_written_into(home, tmp_path):
    data = tmp_path / "fashion"
    with pytest.raises(OutputPathError, match="the input data directory of --dataset idx:"):
        check_outputs({"--json": data / "run.json"}, datasets=[f"idx:{data}"])


def test_predict_never_overwrites_its_model(home, tmp_path, capsys):
    model = tmp_path / "m.kfm"
    assert main(["run", "--quiet", "--n-train", "50", "--n-test", "10", "--save-model",
                 str(model)]) == 0
    before = model.read_bytes()
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--json", str(model)]) == 2
    assert "it is the input model" in capsys.readouterr().err
    assert model.read_bytes() == before


def test_a_good_output_passes_and_leaves_nothing(home, tmp_path, victim):
    out = tmp_path / "results" / "run.json"
    check_outputs({"--json": out, "--save-model": None}, dirs={"--out": tmp_path / "d"},
                  inputs={"model": victim}, datasets=[f"npz:{victim}", "digits"])
    assert not out.exists() and out.parent.is_dir()
    assert list((tmp_path / "d").iterdir()) == []


# Every command that writes checks its outputs before its work: an output inside the
# data cache is refused at once (and the command's work would fail the test).
COMMANDS = [
    ["run", "--json", "{home}/r.json"],
    ["run", "--save-model", "{home}/m.kfm"],
    ["plan", "--json", "{home}/p.json"],
    ["sweep", "--vary", "n_train=50,60", "--out", "{home}/sweep"],
    ["sweep", "--vary", "n_train=50,60", "--out", "{tmp}/sweep", "--json", "{home}/s.json"],
    ["table3", "--rows", "mnist-raw", "--out", "{home}/t3"],
    ["compare", "--dataset", "digits", "--out", "{home}/cmp"],
    ["expressivity", "--out", "{home}/ex"],
    ["sgd", "linear", "--out", "{home}/lin"],
    ["sgd", "net", "--dataset", "digits", "--out", "{home}/net"],
    ["sgd", "net", "--dataset", "digits", "--out", "{tmp}/net", "--json", "{home}/n.json"],
    ["sgd", "figure1", "--dataset", "digits", "--out", "{home}/fig"],
    ["sgd", "width", "--small", "--out", "{home}/width"],
    ["sgd", "width", "--small", "--out", "{tmp}/width", "--figure", "{home}/w.png"],
    ["bench", "solve", "--out", "{home}/bench"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_command_checks_its_outputs_before_its_work(argv, home, tmp_path, monkeypatch,
                                                          capsys):
    import kernelfit.data as data

    def no_data(*a, **k):
        pytest.fail("the command loaded data before checking its outputs")

    monkeypatch.setattr(data, "load_split", no_data)
    monkeypatch.setattr("kernelfit.data.dataset.load_split", no_data)
    argv = [a.format(home=home, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    assert "kernelfit's data cache" in capsys.readouterr().err
    assert not home.exists() or not any(home.rglob("*"))
    assert not os.path.exists(tmp_path / "sweep" / "sweep.csv")

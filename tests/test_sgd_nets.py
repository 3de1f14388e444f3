"""SGD-trained networks (appendix A): parameter counts, inputs, training, records, resumption."""

import json
import sys

import numpy as np
import pytest

import kernelfit
from kernelfit.data import load_split
from kernelfit.errors import BackendError, InputError, MissingDependencyError
from kernelfit.studies.sgd import train as train_mod
from kernelfit.studies.sgd.nets import PAPER_PARAMS, import_torch
from kernelfit.studies.sgd.train import NetConfig, augment_batch, prepare_net_data, train_net

torch = pytest.importorskip("torch", reason="the SGD networks need the torch extra")

# Tiny and on one thread: the whole file takes seconds.
TINY = dict(dataset="digits", n_train=64, n_test=50, batch_size=8, threads=1, quiet=True)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_counts_equal_the_papers_and_forward_shapes(name):
    from kernelfit.studies.sgd.nets import build_model, count_parameters

    torch.manual_seed(0)
    model = build_model(name, (28, 28, 3), 10)
    # Appendix A's exact counts (paper.md: 1,649,402 / 1,387,786 / 1,209,866 / 1,735,178).
    assert count_parameters(model) == {"inception-small": 1_649_402,
                                       "alexnet-small": 1_387_786, "mlp1x512": 1_209_866,
                                       "mlp3x512": 1_735_178}[name]
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 28, 28))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


def test_inputs_match_per_image_standardization_computed_with_numpy():
    # Independent oracle: TF's per_image_standardization formula, by hand in float64.
    config = NetConfig(model="mlp1x512", crop=6, **TINY)
    data = prepare_net_data(config)
    train, _ = load_split("digits", n_train=64, n_test=50, seed=0)
    x = train.images.astype(np.float64) / 16.0           # digits: pixels 0..16
    x = x[:, 1:7, 1:7].reshape(64, -1)                     # centre 6 x 6 of 8 x 8
    mean = x.mean(axis=1, keepdims=True)
    adjusted = np.maximum(x.std(axis=1, keepdims=True), 1 / np.sqrt(x.shape[1]))
    expected = (x - mean) / adjusted
    assert data.train.shape == (64, 6, 6, 1)
    np.testing.assert_allclose(data.train.reshape(64, -1), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(data.train_labels, train.labels)


def test_augment_batch_crops_flips_and_whitens():
    rng = np.random.default_rng(0)
    raw = rng.random((40, 8, 8, 3)).astype(np.float32)
    out = augment_batch(raw, 6, np.random.default_rng(1))
    assert out.shape == (40, 6, 6, 3)
    flat = out.reshape(40, -1).astype(np.float64)
    np.testing.assert_allclose(flat.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(flat.std(axis=1), 1, atol=1e-4)
    # Each output is some whitened 6 x 6 window of its image, possibly mirrored.
    from kernelfit.data.preprocess import per_image_whiten
    for i in range(5):
        windows = [w for t in range(3) for s in range(3)
                   for w in (raw[i, t:t + 6, s:s + 6], raw[i, t:t + 6, s:s + 6][:, ::-1])]
        assert any(np.allclose(per_image_whiten(w[None])[0], out[i], atol=1e-5)
                   for w in windows)


def test_random_labels_are_fitted_and_the_record_is_reused(tmp_path):
    config = NetConfig(model="mlp1x512", randomize="random-labels", max_epochs=40, **TINY)
    record, reused = train_net(config, tmp_path)
    assert not reused
    # The paper's point in miniature: random labels of 64 images fitted exactly.
    assert record["fitted"] and record["train_error"] == 0.0
    assert record["epochs_to_fit"] == record["epochs"] < 40
    assert record["steps"] == record["epochs"] * 8            # 64 images / batch 8
    assert record["randomization"] == "random-labels" and record["n_classes"] == 10
    assert record["optimizer"]["lr"] == 0.01 and record["optimizer"]["momentum"] == 0.9
    hist = record["history"]
    assert [h["epoch"] for h in hist] == list(range(1, len(hist) + 1))
    assert all(np.isfinite(h["loss"]) for h in hist) and hist[-1]["loss"] < hist[0]["loss"]
    np.testing.assert_allclose([h["lr"] for h in hist],
                               [0.01 * 0.95 ** e for e in range(len(hist))])
    saved = json.loads((tmp_path / f"{config.name()}.json").read_text())
    assert saved["train_error"] == 0.0
    assert saved["settings"] == {**config.settings(), "kernelfit": kernelfit.__version__}
    assert not list(tmp_path.glob("*.ckpt*"))       # finished: checkpoint and sidecar removed

    mtime = (tmp_path / f"{config.name()}.json").stat().st_mtime_ns
    again, reused = train_net(NetConfig(**{**config.__dict__, "quiet": False, "threads": 2}),
                              tmp_path)
    assert reused and again == record
    assert (tmp_path / f"{config.name()}.json").stat().st_mtime_ns == mtime


def test_same_seed_same_bits_and_a_killed_run_resumes_identically(tmp_path, monkeypatch):
    config = NetConfig(model="alexnet-small", max_epochs=3, **TINY)
    whole, _ = train_net(config, tmp_path / "whole")
    assert not whole["fitted"] and whole["epochs"] == 3

    real, calls = train_mod._error, {"n": 0}

    def dies_in_epoch_two(*args):
        calls["n"] += 1
        if calls["n"] == 3:                                   # epoch 2's train error
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train_mod, "_error", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_net(config, tmp_path / "killed")
    assert len(list((tmp_path / "killed").glob("*.ckpt"))) == 1
    assert not (tmp_path / "killed" / f"{config.name()}.json").exists()   # no record yet
    monkeypatch.setattr(train_mod, "_error", real)
    resumed, _ = train_net(config, tmp_path / "killed")
    assert any("resumed from the checkpoint of epoch 1" in n for n in resumed["notes"])
    strip = lambda r: [{k: v for k, v in h.items() if k != "seconds"} for h in r["history"]]  # noqa: E731
    assert strip(resumed) == strip(whole)                     # bit-identical floats

    other_seed, _ = train_net(NetConfig(**{**config.__dict__, "seed": 1}), tmp_path / "whole")
    assert strip(other_seed) != strip(whole)


def test_augment_and_weight_decay_run(tmp_path):
    config = NetConfig(model="mlp3x512", augment=True, weight_decay=5e-4, crop=6,
                       max_epochs=2, **TINY)
    record, _ = train_net(config, tmp_path)
    assert record["input_shape"] == [6, 6, 1] and record["epochs"] == 2
    assert record["optimizer"]["weight_decay"] == 5e-4
    assert any(p.startswith("augment") for p in record["preprocessing"])
    assert 0 <= record["test_error"] <= 1


@pytest.mark.parametrize("bad", [
    dict(model="resnet"), dict(batch_size=0), dict(max_epochs=0), dict(lr=-0.1),
    dict(lr=float("nan")), dict(lr_decay=0.0), dict(lr_decay=1.5), dict(momentum=1.0),
    dict(weight_decay=-1.0), dict(randomize="labels:2"), dict(device="gpu"), dict(n_train=0),
    dict(seed=-1), dict(threads=0), dict(augment="yes"), dict(crop=9), dict(dataset="imagenet"),
])
def test_bad_settings_are_typed_errors(tmp_path, bad):
    with pytest.raises(InputError):
        train_net(NetConfig(**{**TINY, "max_epochs": 1, **bad}), tmp_path)
    assert not list(tmp_path.glob("*"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_without_cuda_is_a_backend_error(tmp_path):
    with pytest.raises(BackendError, match="--device cpu"):
        train_net(NetConfig(device="cuda", max_epochs=1, **TINY), tmp_path)


def test_missing_torch_is_a_missing_dependency_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)          # `import torch` -> ImportError
    with pytest.raises(MissingDependencyError, match=r"kernelfit\[torch\]"):
        import_torch()
    with pytest.raises(MissingDependencyError):
        train_net(NetConfig(max_epochs=1, **TINY), tmp_path)


def test_cli_net_prints_parameters_and_summary(tmp_path, capsys):
    from kernelfit.cli import main

    argv = ["sgd", "net", "--model", "mlp1x512", "--dataset", "digits", "--n-train", "64",
            "--n-test", "50", "--batch-size", "8", "--randomize", "random-labels",
            "--max-epochs", "40", "--threads", "1", "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "38,410 parameters" in out and "train error  0.00%" in out
    assert "record written" in out
    assert main(argv) == 0 and "record reused" in capsys.readouterr().out
    assert main(argv[:-2] + ["--lr", "-1", "--out", str(tmp_path)]) == 2


def test_figure1_panels_from_stored_runs(tmp_path):
    pytest.importorskip("matplotlib")
    from kernelfit.studies.figure1 import draw_figure1, parse_levels, run_figure1

    base = NetConfig(model="mlp1x512", max_epochs=40, **TINY)
    results = run_figure1(base, tmp_path, panels="abc", levels=parse_levels("0,0.5,1"))
    assert set(results["a"]) == {"none", "random-labels", "shuffled-pixels", "random-pixels",
                                 "gaussian"}
    # p = 0 and p = 1 are panel a's true and random labels: 6 runs, not 8.
    assert len(list(tmp_path.glob("*.json"))) == 6
    assert results["levels"][0][1] == results["a"]["none"]
    assert "| labels:0.5 |" in results["table"]
    path, = draw_figure1(results, tmp_path, panels="abc", model="mlp1x512")
    assert path.name == "figure1.png" and path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError):
        parse_levels("0,1.5")
    with pytest.raises(InputError):
        run_figure1(base, tmp_path, panels="d")

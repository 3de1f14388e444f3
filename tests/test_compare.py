"""`compare`: the kernel interpolant beside SGD-trained networks on the same data and split."""

import numpy as np
import pytest

from kernelfit.errors import InputError
from kernelfit.experiments.sgd.train import NetConfig, prepare_net_data

pytest.importorskip("torch", reason="the networks of `compare` need the torch extra")
pytest.importorskip("matplotlib", reason="`compare` draws its figure with the plots extra")

from kernelfit.experiments.compare import CompareConfig, compare  # noqa: E402

NET = NetConfig(batch_size=8, max_epochs=30, threads=1, quiet=True)


def _config(**kw):
    return CompareConfig(**{**dict(dataset="digits", n_train=64, n_test=60, seed=3,
                                   randomize="random-labels", models=("mlp1x512",), net=NET),
                            **kw})


def test_compare_on_digits_writes_table_and_png_and_matches_numpy(tmp_path):
    result = compare(_config(), tmp_path)
    kernel, net = result["rows"]
    assert result["table_path"].read_text().startswith("digits, 64 train / 60 test")
    assert "| kernel interpolant (gaussian) | 0.00% |" in result["table"]
    assert result["figure"].read_bytes()[:4] == b"\x89PNG"
    assert result["table_path"].name == "compare-random-labels.md"
    assert net["method"] == "mlp1x512 (SGD)" and net["norm"] is None
    assert kernel["n_train"] == net["n_train"] == 64 and kernel["n_test"] == net["n_test"] == 60
    assert kernel["randomization"] == net["randomization"] == "random-labels"

    # Oracle: the same inputs the networks saw, the interpolant solved with NumPy.
    data = prepare_net_data(NetConfig(**{**NET.__dict__, "dataset": "digits", "n_train": 64,
                                         "n_test": 60, "seed": 3,
                                         "randomize": "random-labels"}))
    X, Z = data.train.reshape(64, -1).astype(np.float64), data.test.reshape(60, -1)
    gamma = 1.0 / (X.shape[1] * X.var())
    sq = lambda A, B: (A * A).sum(1)[:, None] + (B * B).sum(1)[None] - 2 * A @ B.T  # noqa: E731
    K, Kt = np.exp(-gamma * sq(X, X)), np.exp(-gamma * sq(Z.astype(np.float64), X))
    alpha = np.linalg.solve(K, np.eye(10)[data.train_labels])
    expected = np.mean(np.argmax(Kt @ alpha, 1) != data.test_labels)
    assert kernel["test_error"] == pytest.approx(expected, abs=1e-12)
    assert kernel["norm"] == pytest.approx(np.sqrt(np.trace(alpha.T @ K @ alpha)), rel=1e-4)

    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.json")}
    assert len(stamps) == 2                                   # kernel + one network
    again = compare(_config(), tmp_path)
    assert again["rows"] == result["rows"]
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.json")} == stamps


@pytest.mark.parametrize("bad", [dict(models=()), dict(models=("vgg",)),
                                 dict(randomize="nonsense"), dict(dataset="imagenet"),
                                 dict(n_train=0)])
def test_compare_rejects_bad_settings(tmp_path, bad):
    with pytest.raises(InputError):
        compare(_config(**bad), tmp_path)


def test_compare_cli(tmp_path, capsys):
    from kernelfit.cli import main

    argv = ["compare", "--dataset", "digits", "--n-train", "64", "--n-test", "60",
            "--models", "mlp1x512", "--batch-size", "8", "--max-epochs", "5", "--threads", "1",
            "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| mlp1x512 (SGD) |" in out and "compare-none.png" in out
    assert (tmp_path / "compare-none.md").exists() and (tmp_path / "compare-none.png").exists()


def test_compare_puts_the_networks_own_kernels_beside_them(tmp_path):
    from kernelfit.experiments.compare import parse_network_kernels
    from kernelfit.network_kernels import relu_network_kernels

    net = NetConfig(batch_size=16, max_epochs=2, threads=1, quiet=True)
    result = compare(_config(randomize="none", models=("mlp1x512", "mlp3x512"), net=net,
                             network_kernels=parse_network_kernels("nngp:1,ntk:3")),
                     tmp_path)
    methods = [r["method"] for r in result["rows"]]
    assert methods == ["kernel interpolant (gaussian)", "kernel interpolant (nngp, depth 1)",
                       "kernel interpolant (ntk, depth 3)", "mlp1x512 (SGD)", "mlp3x512 (SGD)"]
    assert "| kernel interpolant (ntk, depth 3) | 0.00% |" in result["table"]
    assert result["figure"].read_bytes()[:4] == b"\x89PNG"

    # Oracle: the NTK of depth 3 on the inputs the networks saw, solved with NumPy.
    data = prepare_net_data(NetConfig(**{**net.__dict__, "dataset": "digits", "n_train": 64,
                                         "n_test": 60, "seed": 3}))
    X = data.train.reshape(64, -1).astype(np.float64)
    Z = data.test.reshape(60, -1).astype(np.float64)
    sx, sz = (X * X).sum(1), (Z * Z).sum(1)
    kw = dict(d=X.shape[1], depth=3)
    K = relu_network_kernels(X @ X.T, sx[:, None], sx[None], **kw)[1]
    Kt = relu_network_kernels(Z @ X.T, sz[:, None], sx[None], **kw)[1]
    alpha = np.linalg.solve(K, np.eye(10)[data.train_labels])
    expected = np.mean(np.argmax(Kt @ alpha, 1) != data.test_labels)
    assert result["rows"][2]["test_error"] == pytest.approx(expected, abs=1e-12)
    assert result["rows"][2]["norm"] == pytest.approx(np.sqrt(np.trace(alpha.T @ K @ alpha)),
                                                      rel=1e-4)


@pytest.mark.parametrize("text", ["gaussian:1", "ntk", "ntk:-1", "ntk:x", "ntk:1,ntk:1"])
def test_network_kernel_specs_are_checked(text):
    from kernelfit.experiments.compare import parse_network_kernels
    with pytest.raises(InputError):
        parse_network_kernels(text)

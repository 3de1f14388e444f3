"""benchmarks/gpu/cifar_randconv.py at a tiny size on torch CPU: well-formed JSON, exact fits,
and the exact row's test error equal to a NumPy/SciPy re-computation of the same pipeline."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "cifar_randconv.py"


def load_script():
    spec = importlib.util.spec_from_file_location("cifar_randconv", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_fake_cifar(folder: Path, seed=0):
    """CIFAR-shaped uint8 classes: faint smooth colour patterns under pixel noise.

    The class signal is weak on purpose (~28% test error at this size), so the
    test error compared below is not a trivial 0.
    """
    from scipy.ndimage import gaussian_filter
    rng = np.random.default_rng(seed)
    protos = np.stack([gaussian_filter(rng.random((32, 32, 3)), (3, 3, 0)) for _ in range(10)])
    protos = (protos - protos.mean(0)) / protos.std()
    for split, n in (("train", 700), ("test", 250)):
        y = rng.integers(0, 10, n)
        x = 0.5 + 0.02 * protos[y] + 0.25 * rng.standard_normal((n, 32, 32, 3))
        np.save(folder / f"x_{split}.npy", (np.clip(x, 0, 1) * 255).astype(np.uint8))
        np.save(folder / f"y_{split}.npy", y)


def numpy_test_error(mod, data_dir, sigma, seed=0, filters=64):
    """The exact row through the host pipeline: NumPy features, float64 K, scipy's solve."""
    from kernelfit.engine.gram.stream import standardize_chunk
    from kernelfit.features import make_features
    x_tr, y_tr, x_te, y_te = mod.load_cifar_npy(data_dir, 600, 200, seed)
    order, _ = mod.fit_first_order(y_tr, 60, seed)
    x_tr, y_tr = x_tr[order], y_tr[order]
    x_tr, x_te = (x.astype(np.float32) / 255 for x in (x_tr, x_te))
    fmap = make_features("randconv", seed=seed, n_filters=filters).fit(x_tr)
    A, B = standardize_chunk(fmap.transform(x_tr), fmap.transform(x_te), np.float64)
    sq, sq_te = (A * A).sum(1), (B * B).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None] - 2 * A @ A.T, 0)
    d2_te = np.maximum(sq_te[:, None] + sq[None] - 2 * B @ A.T, 0)
    Y = np.eye(10)[y_tr]
    alpha = scipy.linalg.solve(np.exp(-d2 / (2 * sigma**2)), Y, assume_a="pos")
    pred = np.argmax(np.exp(-d2_te / (2 * sigma**2)) @ alpha, axis=1)
    return float(np.mean(pred != y_te))


DEVICES = ["cpu"] + [pytest.param("cuda", marks=pytest.mark.gpu)] * torch.cuda.is_available()


@pytest.mark.parametrize("device", DEVICES)
def test_tiny_run(tmp_path, device):
    mod = load_script()
    write_fake_cifar(tmp_path)
    out = tmp_path / "result.json"
    mod.main([str(tmp_path), "--json", str(out), "--n-train", "600", "--n-test", "200",
              "--filters", "64", "--chunk-filters", "32", "--device", device])
    rec = json.loads(out.read_text())
    assert rec["device"].startswith(f"torch on {device}")
    assert rec["status"] == "done" and rec["n_train"] == 600 and rec["n_test"] == 200
    assert rec["feature_columns"] == 512
    assert rec["validation"]["n_fit"] == 540 and rec["validation"]["n_val"] == 60
    for stage in ("load_and_fit_features", "features", "gram", "selection", "total"):
        assert rec["seconds"][stage] > 0
    tried = {p["params"]["sigma"] for p in rec["selection"]["points"]}
    rows = rec["rows"]
    assert set(rows) == {"cifar10-randconv", "cifar10-randconv-l2"}
    assert rows["cifar10-randconv"]["lam"] == 0 and rows["cifar10-randconv-l2"]["lam"] > 0
    for r in rows.values():
        assert r["finite"] and r["relative_residual"] < 1e-5
        assert r["sigma"] in tried and 0 <= r["test_error"] <= 1 and r["norm"] > 0
        assert r["seconds"]["factor+solve"] > 0 and r["seconds"]["predict"] > 0
        assert r["solver"] == "kernelfit.engine.solvers.solve_stored" and r["converged"]
    exact = rows["cifar10-randconv"]
    assert exact["train_error"] == 0                  # an interpolant fits its labels
    ref = numpy_test_error(mod, tmp_path, exact["sigma"])
    assert 0.05 < ref < 0.6                           # the comparison is not a trivial 0
    assert abs(exact["test_error"] - ref) <= 1 / 200 + 1e-12   # at most one borderline flip


def test_bad_inputs(tmp_path):
    mod = load_script()
    from kernelfit.errors import InputError
    with pytest.raises(InputError, match="x_train.npy is missing"):
        mod.main([str(tmp_path), "--json", str(tmp_path / "r.json"), "--device", "cpu"])
    write_fake_cifar(tmp_path)
    with pytest.raises(InputError, match="--n-train"):
        mod.main([str(tmp_path), "--json", str(tmp_path / "r.json"), "--n-train", "5000",
                  "--device", "cpu"])
    with pytest.raises(InputError, match="--filters"):
        mod.main([str(tmp_path), "--json", str(tmp_path / "r.json"), "--filters", "0"])


def test_arrays_in_parts_across_folders(tmp_path):
    """x_train split in pieces over two folders loads as the whole file does."""
    mod = load_script()
    whole = tmp_path / "whole"
    whole.mkdir()
    write_fake_cifar(whole)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    x = np.load(whole / "x_train.npy")
    for i, (folder, piece) in enumerate(zip((a, b, a), np.array_split(x, 3), strict=True)):
        np.save(folder / f"x_train.part{i}.npy", piece)
    for name in ("y_train", "x_test", "y_test"):
        np.save(b / f"{name}.npy", np.load(whole / f"{name}.npy"))
    ref = mod.load_cifar_npy(whole, 100, 50)
    got = mod.load_cifar_npy([a, b], 100, 50)
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_array_equal(g, r)
    (a / "x_train.part2.npy").rename(a / "x_train.part3.npy")
    from kernelfit.errors import InputError
    with pytest.raises(InputError, match="without gaps"):
        mod.load_cifar_npy([a, b])


def test_export_parts_fit_the_limit_and_load_back(tmp_path):
    """export_cifar_parts cuts the arrays into folders under the size limit; the loader
    puts them back together bit for bit."""
    spec = importlib.util.spec_from_file_location("export_cifar_parts",
                                                  SCRIPT.parent / "export_cifar_parts.py")
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    mod = load_script()
    rng = np.random.default_rng(4)
    arrays = {"y_train": rng.integers(0, 10, 400), "y_test": rng.integers(0, 10, 90),
              "x_test": rng.integers(0, 256, (90, 32, 32, 3), dtype=np.uint8),
              "x_train": rng.integers(0, 256, (400, 32, 32, 3), dtype=np.uint8)}
    limit = 600_000                                   # ~1.7 MB of data: 3+ folders
    folders = exp.write_parts(arrays, tmp_path, limit)
    assert len(folders) >= 3
    for d in folders:
        assert sum(f.stat().st_size for f in d.iterdir()) <= limit
    got = mod.load_cifar_npy(folders)
    for name, g in zip(("x_train", "y_train", "x_test", "y_test"), got, strict=True):
        np.testing.assert_array_equal(g, arrays[name])

"""Every path and size a user gives is checked before it costs anything: npz headers,
flat npz arrays, idx:DIR (never a recursive search), --memory-limit, --refine-steps and
refinement that stops when it stops improving. Small generated files in tmp_path only."""

from __future__ import annotations

import io
import json
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
import scipy.linalg
from numpy.lib import format as npy
from sklearn.metrics.pairwise import rbf_kernel

from kernelfit import Options
from kernelfit.cli import main
from kernelfit.data import idx, load_split, user
from kernelfit.engine.solvers.refine import STALL_RATIO, refine
from kernelfit.engine.solvers.solution import Solution, check_solution, residual_limit
from kernelfit.errors import AccuracyError, AccuracyWarning, InputError, UserDataError
from kernelfit.pipeline import explain as explain_mod
from kernelfit.pipeline import run_plan
from kernelfit.pipeline.run import RunConfig, _fit_flops, fit_run


# -- npz: headers read before anything is allocated ---------------------------------------
def _member(shape, dtype="<f8", data=b""):
    b = io.BytesIO()
    npy.write_array_header_1_0(b, {"descr": dtype, "fortran_order": False, "shape": shape})
    return b.getvalue() + data


def _lying_npz(path, x_train_shape):
    """An npz whose X_train header claims ``x_train_shape`` but holds no data."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("X_train.npy", _member(x_train_shape))
        z.writestr("y_train.npy", _member((10,), "<i8", np.zeros(10, "<i8").tobytes()))
        z.writestr("X_test.npy", _member((2, 8, 8), "<f8", np.zeros(128).tobytes()))
        z.writestr("y_test.npy", _member((2,), "<i8", np.zeros(2, "<i8").tobytes()))
    return path


def test_npz_header_claiming_a_huge_shape_is_refused_before_allocation(tmp_path):
    path = _lying_npz(tmp_path / "huge.npz", (10**12, 8, 8))
    tracemalloc.start()
    try:
        with pytest.raises(UserDataError) as err:
            load_split(f"npz:{path}", data_home=tmp_path / "home", progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(err.value)
    assert "X_train.npy's header says shape (1000000000000, 8, 8)" in msg
    assert "holds 0 B of data" in msg and "save the arrays again" in msg
    assert peak < 2**24               # nothing near the claimed 512 TB was allocated


def test_npz_header_text_that_does_not_parse_is_a_user_data_error(tmp_path):
    """NumPy parses a member's header text as a literal; an unclosed bracket fails there
    with a TokenError, which must still reach the user as a UserDataError."""
    member = _member((3, 8, 8), data=np.zeros(192).tobytes())
    at = member.index(b"(3, 8, 8)") + len(b"(3, 8, 8")
    member = member[:at] + b" " + member[at + 1:]           # "(3, 8, 8 ": never closed
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as z:                    # written whole: its CRC is right
        z.writestr("X_train.npy", member)
        for name, arr in (("y_train", np.zeros(3, "<i8")), ("X_test", np.zeros((2, 8, 8))),
                          ("y_test", np.zeros(2, "<i8"))):
            z.writestr(f"{name}.npy", _member(arr.shape, arr.dtype.str, arr.tobytes()))
    with pytest.raises(UserDataError, match=r"X_train.npy: not a .npy array"):
        load_split(f"npz:{path}", data_home=tmp_path / "home", progress=False)


def test_npz_header_and_data_disagreeing_is_refused(tmp_path):
    path = _lying_npz(tmp_path / "short.npz", (3, 8, 8))   # claims 1,536 bytes, holds 0
    with pytest.raises(UserDataError, match=r"\(3, 8, 8\) of float64 \(1.5 kB\)"):
        load_split(f"npz:{path}", data_home=tmp_path / "home", progress=False)


def test_npz_larger_than_the_available_memory_is_refused(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    path = tmp_path / "ok.npz"
    np.savez(path, X_train=rng.random((20, 4, 4)), y_train=np.arange(20) % 2,
             X_test=rng.random((5, 4, 4)), y_test=np.arange(5) % 2)
    need = 20 * 16 * 8 + 20 * 8 + 5 * 16 * 8 + 5 * 8           # the four arrays' bytes
    monkeypatch.setattr(user, "_available_memory", lambda: need - 1)
    with pytest.raises(UserDataError, match="take 3.4 kB once decompressed, but only 3.4 kB"):
        load_split(f"npz:{path}", data_home=tmp_path / "home", progress=False)
    monkeypatch.setattr(user, "_available_memory", lambda: need)
    train, _ = load_split(f"npz:{path}", data_home=tmp_path / "home", progress=False)
    np.testing.assert_array_equal(train.images, np.load(path)["X_train"])


# -- npz: flat (n, d) arrays ----------------------------------------------------------------
def _flat_npz(path, n_train=40, n_test=15, d=6):
    rng = np.random.default_rng(3)
    arrays = {"X_train": rng.random((n_train, d)), "y_train": np.arange(n_train) % 3,
              "X_test": rng.random((n_test, d)), "y_test": np.arange(n_test) % 3}
    np.savez(path, **arrays)
    return arrays


def test_flat_npz_runs_and_agrees_with_data_info_and_an_independent_solve(tmp_path, capsys):
    a = _flat_npz(tmp_path / "flat.npz")
    name, home = f"npz:{tmp_path / 'flat.npz'}", str(tmp_path / "home")
    out = tmp_path / "r.json"
    assert main(["run", "--dataset", name, "--data-home", home, "--sigma", "0.5",
                 "--dtype", "float64", "--quiet", "--json", str(out)]) == 0
    assert main(["data", "info", name, "--data-home", home]) == 0
    info = capsys.readouterr().out
    rec = json.loads(out.read_text())
    assert "image shape  (6,)" in info and rec["feature_dim"] == 6
    assert f"train        {rec['n_train']} images" in info
    assert f"test         {rec['n_test']} images" in info
    # the oracle: SciPy's solve with scikit-learn's kernel on the same arrays (floats in
    # [0, 1]: max_value 1, so the scale step leaves them as they are)
    Y = np.eye(3)[a["y_train"]]
    K = rbf_kernel(a["X_train"], gamma=1 / (2 * 0.5**2))
    alpha = scipy.linalg.solve(K, Y, assume_a="pos")
    pred = (rbf_kernel(a["X_test"], a["X_train"], gamma=2.0) @ alpha).argmax(axis=1)
    assert rec["test_error"] == pytest.approx(np.mean(pred != a["y_test"]))
    assert rec["train_error"] == 0.0


@pytest.mark.parametrize("steps", ["flatten", "scale,flatten", "scale,whiten"])
def test_flat_npz_takes_the_steps_that_mean_something_for_rows(tmp_path, steps):
    a = _flat_npz(tmp_path / "flat.npz")
    config = RunConfig(dataset=f"npz:{tmp_path / 'flat.npz'}", data_home=str(tmp_path / "h"),
                       preprocessing=steps, sigma=1.0, options=Options(dtype="float64"))
    fitted = fit_run(config)
    assert fitted.record.feature_dim == 6 and fitted.record.n_train == 40
    X = a["X_train"].astype(np.float32)
    if "whiten" in steps:          # per row: (x - mean) / max(std, 1/sqrt(d))
        X = (X - X.mean(1, keepdims=True)) / np.maximum(X.std(1, keepdims=True), 6**-0.5)
    # what the estimator was fitted on: the rows, whitened by NumPy above where asked
    np.testing.assert_allclose(fitted.estimator.X_fit_, X, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw, words", [
    (dict(preprocessing="scale,crop:3"), "no centre to crop"),
    (dict(features="gabor"), "only the raw front end takes them"),
    (dict(features="randconv"), "only the raw front end takes them"),
])
def test_flat_npz_refuses_image_only_steps_with_the_way_out(tmp_path, kw, words):
    _flat_npz(tmp_path / "flat.npz")
    config = RunConfig(dataset=f"npz:{tmp_path / 'flat.npz'}", data_home=str(tmp_path / "h"),
                       **kw)
    with pytest.raises(InputError, match=words):
        fit_run(config)


# -- idx:DIR: DIR itself and DIR/raw, nothing deeper -----------------------------------------
def _write_idx(folder, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"train": (rng.integers(0, 256, (12, 6, 5), dtype=np.uint8), np.arange(12) % 3),
            "test": (rng.integers(0, 256, (4, 6, 5), dtype=np.uint8), np.arange(4) % 3)}
    for split, (img, lab) in idx.MNIST_FILES.items():
        idx.write_idx(folder / img, data[split][0])
        idx.write_idx(folder / lab, data[split][1].astype(np.uint8))
    return data


def test_idx_reads_dir_and_its_raw_subfolder(tmp_path):
    data = _write_idx(tmp_path / "fashion" / "raw")       # torchvision's layout
    train, _ = load_split(f"idx:{tmp_path / 'fashion'}", data_home=tmp_path / "h",
                          progress=False)
    np.testing.assert_array_equal(train.images, data["train"][0])


def test_idx_never_searches_deeper_and_says_where_it_looked(tmp_path, monkeypatch):
    _write_idx(tmp_path / "top" / "other" / "mnist")       # a complete set, two levels down
    _write_idx(tmp_path / "top" / "raw" / "deeper", seed=1)
    import kernelfit.data.sources as sources
    walked = []
    real_walk = sources.os.walk
    monkeypatch.setattr(sources.os, "walk",
                        lambda p: (walked.append(p), real_walk(p))[1])
    with pytest.raises(UserDataError) as err:
        load_split(f"idx:{tmp_path / 'top'}", data_home=tmp_path / "h", progress=False)
    msg = str(err.value)
    assert "missing train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte"\
           in msg
    assert f"looked in {tmp_path / 'top'}, {tmp_path / 'top' / 'raw'})" in msg
    assert "never from other subfolders" in msg
    # each folder's own listing only: os.walk started there, its subfolders pruned
    assert [str(p) for p in walked] == [str(tmp_path / "top"), str(tmp_path / "top" / "raw")]


# -- --memory-limit: not above the machine's physical memory, unless --force ---------------
def test_memory_limit_above_physical_memory_is_refused_unless_forced(tmp_path, capsys):
    import psutil
    total = psutil.virtual_memory().total
    above = str(total + 10**6)
    assert main(["plan", "--memory-limit", above]) == 2
    err = capsys.readouterr().err
    from kernelfit.formats import human_bytes
    assert f"--memory-limit {human_bytes(total + 10**6)} is more than this machine's " \
           f"{human_bytes(total)} of physical memory" in err and "--force" in err
    assert main(["run", "--quiet", "--memory-limit", above]) == 2
    assert "of physical memory" in capsys.readouterr().err
    out = tmp_path / "plan.json"
    assert main(["plan", "--memory-limit", above, "--force", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["plan"]["limit_bytes"] == total + 10**6
    assert main(["plan", "--memory-limit", str(total)]) == 0      # the machine's own size
    # the library value stays a plain byte count: plans for another machine are allowed
    assert Options(memory_limit=total * 4).memory_limit == total * 4
    run_plan.check_memory_limit(total * 4, force=True)
    with pytest.raises(InputError, match="physical memory"):
        run_plan.check_memory_limit(total + 1)


# -- --refine-steps bounded; refinement stops when it stops improving ------------------------
def test_refine_steps_are_bounded(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--refine-steps", "99999999999"])
    assert "must be <= 100" in capsys.readouterr().err
    with pytest.raises(InputError, match="refine_steps must be an integer >= 0 and <= 100"):
        Options(refine_steps=101)
    assert Options(refine_steps=100).refine_steps == 100


def _float32_system(n=300, lam=1e-3):
    rng = np.random.default_rng(5)
    X = rng.random((n, 8))
    K64 = rbf_kernel(X, gamma=0.5) + lam * np.eye(n)
    K32 = K64.astype(np.float32).astype(np.float64)    # the rounded K, exactly
    f32 = scipy.linalg.cho_factor(K32.astype(np.float32))
    Y = rng.standard_normal((n, 2))
    return K32, (lambda R: scipy.linalg.cho_solve(f32, R.astype(np.float32))), Y


def test_refinement_stops_once_a_step_no_longer_halves_the_residual():
    K, solve, Y = _float32_system()
    X, hist, stop = refine(solve, K, Y, solve(Y), steps=100)
    assert len(hist) < 10 and stop.startswith(f"stopped after {len(hist) - 1} of 100 steps")
    # every step before the last cut the residual by at least 1 / STALL_RATIO
    assert all(b <= STALL_RATIO * a for a, b in zip(hist[:-2], hist[1:-1], strict=True))
    assert not hist[-1] <= STALL_RATIO * hist[-2]
    np.testing.assert_allclose(X, np.linalg.solve(K, Y), rtol=1e-8)   # NumPy's float64 oracle
    assert np.linalg.norm(K @ X - Y) / np.linalg.norm(Y) <= min(hist)


def test_diverging_refinement_stops_and_keeps_the_best_iterate():
    K, _, Y = _float32_system(n=60)
    bad = np.linalg.inv(K) * 3.5          # corrections overshoot: error grows 2.5x a step
    X0 = np.zeros_like(Y)
    X, hist, stop = refine(lambda R: bad @ R, K, Y, X0, steps=50)
    assert len(hist) == 2 and hist[1] > hist[0] and stop.startswith("stopped after 1 of 50")
    np.testing.assert_array_equal(X, X0)   # the step made it worse: undone


def _stalled_solution(residual, n=400):
    # decision values that vary (constant ones are a degenerate fit, warned about apart)
    K_alpha = np.random.default_rng(0).standard_normal((n, 1))
    return Solution(alpha=np.ones((n, 1)), K_alpha=K_alpha,
                    relative_residual=residual, norm=1.0, shift=0.0,
                    info={"refine_stop": "stopped after 2 of 100 steps: ..."})


def test_a_refinement_stalled_above_float64s_limit_warns_or_fails_strict():
    limit64 = residual_limit("float64", 400)
    limit32 = residual_limit("float32", 400)
    with pytest.warns(AccuracyWarning, match="iterative refinement stopped after 2 of 100"):
        sol = check_solution(_stalled_solution(10 * limit64), limit=limit32,
                             options=Options(), dtype="float32")
    assert not sol.converged
    with pytest.raises(AccuracyError, match="iterative refinement stopped"):
        check_solution(_stalled_solution(10 * limit64), limit=limit32,
                       options=Options(strict=True), dtype="float32")
    with warnings.catch_warnings():        # stalled at float64's floor: nothing to say
        warnings.simplefilter("error", AccuracyWarning)
        assert check_solution(_stalled_solution(limit64 / 10), limit=limit32,
                              options=Options(), dtype="float32").converged


def test_a_run_records_why_refinement_stopped():
    fitted = fit_run(RunConfig(n_train=400, n_test=50, sigma=1.9,
                               options=Options(dtype="float32", refine_steps=100)))
    stop = fitted.estimator.solver_info_["refine_stop"]
    hist = fitted.record.refine_history
    assert stop.startswith(f"stopped after {len(hist) - 1} of 100 steps") and len(hist) < 10
    assert f"iterative refinement {stop}" in fitted.record.notes
    assert fitted.record.converged and fitted.record.relative_residual < 1e-12


def test_time_estimates_count_every_refinement_step(monkeypatch):
    n, d, c = 1000, 64, 10
    base = _fit_flops(n, d, c, "cholesky", Options(dtype="float32"))
    one = _fit_flops(n, d, c, "cholesky", Options(dtype="float32", refine_steps=1))
    many = _fit_flops(n, d, c, "cholesky", Options(dtype="float32", refine_steps=100))
    assert one > base and many - base == pytest.approx(100 * (one - base))
    # `kernelfit plan` shows the refinement beside the Gram and the factor
    monkeypatch.setattr(explain_mod, "_rate", lambda plan, opts: (10.0, "a fixed rate"))
    info = {s: explain_mod.explain(RunConfig(n_train=300, n_test=50, options=Options(
        dtype="float32", refine_steps=s))) for s in (1, 40)}
    assert info[40]["estimate"]["refine_s"] == pytest.approx(40 * info[1]["estimate"]["refine_s"])
    assert info[40]["estimate"]["refine_s"] > info[40]["estimate"]["factor_s"]
    assert "refinement" in explain_mod.render(info[40])

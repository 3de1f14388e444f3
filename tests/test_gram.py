import json

import numpy as np
import pytest
from sklearn.metrics.pairwise import rbf_kernel

from kernelfit.errors import StaleGramError
from kernelfit.gram import build_gram, cross_gram_matvec
from kernelfit.gram_disk import build_gram_on_disk
from kernelfit.kernels import make_kernel
from kernelfit.options import Options


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("block", [1, 7, 64, 1000])
def test_build_gram_matches_sklearn(rng, n_jobs, block):
    X = rng.random((150, 6))
    K = build_gram(X, make_kernel("gaussian", gamma=0.4),
                   options=Options(dtype="float64", block_size=block, n_jobs=n_jobs))
    np.testing.assert_allclose(K, rbf_kernel(X, gamma=0.4), atol=1e-13)
    assert np.array_equal(K, K.T)  # exactly symmetric: each block computed once


def test_build_gram_float32_into_given_buffer(rng):
    X = rng.random((90, 5))
    out = np.empty((90, 90), dtype=np.float32)
    K = build_gram(X, make_kernel("gaussian", gamma=1.0), out=out,
                   options=Options(block_size=32))
    assert K is out
    np.testing.assert_allclose(K, rbf_kernel(X, gamma=1.0), atol=3e-6)
    np.testing.assert_array_equal(np.diag(K), 1.0)


def test_disk_gram_resumes_after_a_kill(tmp_path, rng):
    X = rng.random((100, 4))
    k = make_kernel("gaussian", gamma=0.5)
    opts = Options(dtype="float64", block_size=16, n_jobs=1)
    path = tmp_path / "K.npy"

    class Killed(Exception):
        pass

    calls = []

    def die_after_three(idx):
        calls.append(idx)
        if len(calls) == 3:
            raise Killed

    import kernelfit.gram as gram
    import kernelfit.gram_disk as gram_disk
    original = gram_disk.build_gram

    def killing_build(*a, **kw):
        done = kw["on_panel_done"]

        def hook(idx):
            done(idx)
            die_after_three(idx)
        kw["on_panel_done"] = hook
        return original(*a, **kw)

    gram_disk.build_gram = killing_build
    try:
        with pytest.raises(Killed):
            build_gram_on_disk(X, k, path, options=opts)
    finally:
        gram_disk.build_gram = original
    progress = json.loads((tmp_path / "K.npy.progress").read_text())
    assert len(progress["done"]) == 3
    # resume: only the remaining panels are built
    built = []
    orig_panel = gram._build_panel

    def counting_panel(X_, sq, kern, out, i0, i1):
        built.append(i0)
        return orig_panel(X_, sq, kern, out, i0, i1)

    gram._build_panel = counting_panel
    try:
        K = build_gram_on_disk(X, k, path, options=opts)
    finally:
        gram._build_panel = orig_panel
    assert len(built) == 7 - 3
    assert not (tmp_path / "K.npy.progress").exists()
    np.testing.assert_allclose(np.load(path), rbf_kernel(X, gamma=0.5), atol=1e-13)
    np.testing.assert_allclose(K, rbf_kernel(X, gamma=0.5), atol=1e-13)
    # bit-identical to an uninterrupted build
    whole = build_gram_on_disk(X, k, tmp_path / "whole.npy", options=opts)
    np.testing.assert_array_equal(np.load(path), np.asarray(whole))


def test_disk_gram_rebuilds_when_the_data_changed(tmp_path, rng):
    X = rng.random((40, 3))
    k = make_kernel("gaussian", gamma=0.5)
    opts = Options(dtype="float64", block_size=8, n_jobs=1)
    path = tmp_path / "K.npy"
    (tmp_path / "K.npy.progress").write_text(json.dumps({"fingerprint": "stale", "done": [0, 1]}))
    np.save(path, np.zeros((40, 40)))
    K = build_gram_on_disk(X, k, path, options=opts)
    np.testing.assert_allclose(K, rbf_kernel(X, gamma=0.5), atol=1e-13)


def _count_panels(monkeypatch):
    import kernelfit.gram as gram
    built = []
    orig = gram._build_panel

    def counting(X_, sq, kern, out, i0, i1):
        built.append(i0)
        return orig(X_, sq, kern, out, i0, i1)

    monkeypatch.setattr(gram, "_build_panel", counting)
    return built


def test_disk_gram_finished_file_is_reused_only_when_it_matches(tmp_path, rng, monkeypatch):
    X = rng.random((40, 3))
    opts = Options(dtype="float64", block_size=8, n_jobs=1)
    path = tmp_path / "K.npy"
    build_gram_on_disk(X, make_kernel("gaussian", gamma=0.5), path, options=opts)
    assert not (tmp_path / "K.npy.progress").exists() and (tmp_path / "K.npy.meta.json").exists()
    built = _count_panels(monkeypatch)
    # same request: reused, nothing rebuilt
    K = build_gram_on_disk(X, make_kernel("gaussian", gamma=0.5), path, options=opts)
    assert built == []
    np.testing.assert_allclose(K, rbf_kernel(X, gamma=0.5), atol=1e-13)
    # another sigma: rebuilt (the old code returned the stale K)
    K = build_gram_on_disk(X, make_kernel("gaussian", gamma=2.0), path, options=opts)
    assert len(built) == 5
    np.testing.assert_allclose(K, rbf_kernel(X, gamma=2.0), atol=1e-13)
    # another X of the same shape: rebuilt
    X2 = rng.random((40, 3))
    K = build_gram_on_disk(X2, make_kernel("gaussian", gamma=2.0), path, options=opts)
    np.testing.assert_allclose(K, rbf_kernel(X2, gamma=2.0), atol=1e-13)
    # another dtype: rebuilt, in that dtype
    K = build_gram_on_disk(X2, make_kernel("gaussian", gamma=2.0), path,
                           options=opts.replace(dtype="float32"))
    assert K.dtype == np.float32
    np.testing.assert_allclose(K, rbf_kernel(X2, gamma=2.0), atol=1e-6)


def test_disk_gram_refuses_a_stale_file_when_asked(tmp_path, rng):
    X = rng.random((30, 3))
    opts = Options(dtype="float64", block_size=8, n_jobs=1)
    path = tmp_path / "K.npy"
    build_gram_on_disk(X, make_kernel("gaussian", gamma=0.5), path, options=opts)
    with pytest.raises(StaleGramError, match="kernel differs") as info:
        build_gram_on_disk(X, make_kernel("gaussian", gamma=3.0), path, options=opts,
                           rebuild=False)
    assert "gamma" in str(info.value) and "Delete it" in str(info.value)
    with pytest.raises(StaleGramError, match="X \\(the data\\) differs"):
        build_gram_on_disk(X + 1, make_kernel("gaussian", gamma=0.5), path, options=opts,
                           rebuild=False)
    # the file written by an older kernelfit (no record beside it) is not trusted either
    (tmp_path / "K.npy.meta.json").unlink()
    with pytest.raises(StaleGramError, match="says what it holds"):
        build_gram_on_disk(X, make_kernel("gaussian", gamma=0.5), path, options=opts,
                           rebuild=False)


def test_disk_gram_truncated_or_zeroed_file_is_rebuilt(tmp_path, rng, capsys):
    X = rng.random((64, 3))
    k = make_kernel("gaussian", gamma=0.5)
    opts = Options(dtype="float64", block_size=16, n_jobs=1, progress=True)
    path = tmp_path / "K.npy"
    build_gram_on_disk(X, k, path, options=opts)
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # cut off the last rows
        fh.truncate(size - 64 * 8 * 5)
    with pytest.raises(StaleGramError, match="truncated"):
        build_gram_on_disk(X, k, path, options=opts, rebuild=False)
    K = build_gram_on_disk(X, k, path, options=opts)
    assert "rebuilding" in capsys.readouterr().err
    np.testing.assert_allclose(K, rbf_kernel(X, gamma=0.5), atol=1e-13)
    del K
    # same size, but a stretch of zeros (a lost page): the spot check sees it
    with open(path, "r+b") as fh:
        fh.seek(size - 64 * 8 * 20)
        fh.write(b"\0" * 64 * 8 * 20)
    with pytest.raises(StaleGramError, match="diagonal"):
        build_gram_on_disk(X, k, path, options=opts, rebuild=False)
    K = build_gram_on_disk(X, k, path, options=opts)
    np.testing.assert_allclose(K, rbf_kernel(X, gamma=0.5), atol=1e-13)


def test_cross_gram_matvec(rng):
    A, B, V = rng.random((33, 5)), rng.random((47, 5)), rng.standard_normal((47, 3))
    k = make_kernel("gaussian", gamma=0.2)
    got = cross_gram_matvec(k, A, B, V, dtype="float64", block_size=10)
    np.testing.assert_allclose(got, rbf_kernel(A, B, gamma=0.2) @ V, atol=1e-12)

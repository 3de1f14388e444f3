import json

import numpy as np
import pytest

from kernelfit.errors import InputError
from kernelfit.features import FEATURES, cached_transform, feature_params, make_features
from kernelfit.features import cache as cache_mod


@pytest.fixture
def calls(monkeypatch):
    """The names of the maps whose transform ran (not read from the cache)."""
    ran = []
    real = cache_mod.FeatureMap.transform

    def counting(self, images, progress=False):
        ran.append(self.name)
        return real(self, images, progress=progress)

    monkeypatch.setattr(cache_mod.FeatureMap, "transform", counting)
    return ran


@pytest.fixture
def gray():
    return np.random.default_rng(0).random((5, 12, 12), dtype=np.float32)


def test_registry_and_errors():
    assert FEATURES == ("raw", "gabor", "scattering", "randconv", "rff")
    with pytest.raises(InputError, match="raw, gabor, scattering, randconv, rff"):
        make_features("hog")
    with pytest.raises(InputError, match=r"unknown parameter\(s\) sigma.*valid: whiten"):
        make_features("raw", sigma=3)
    assert "n_filters" in feature_params("randconv")


@pytest.mark.parametrize("name, params", [("raw", {}), ("gabor", {"pool_grid": 4}),
                                          ("scattering", {"J": 1, "L": 4}),
                                          ("randconv", {"n_filters": 3, "n_fit_patches": 50}),
                                          ("rff", {"n_features": 600})])
def test_every_map_follows_the_contract(name, params, gray):
    fmap = make_features(name, seed=4, **params)
    assert fmap.name == name
    assert fmap.fit(gray) is fmap
    F = fmap.transform(gray)
    assert F.shape == (5, fmap.dim) and F.dtype == np.float32
    json.dumps(fmap.params)
    assert fmap.params["seed"] == 4
    assert all(isinstance(s, str) for s in fmap.preprocessing)
    # streaming is a declared capability: a chunked map's columns equal the full rows'
    assert fmap.streamable == (name in ("randconv", "rff"))
    if fmap.streamable:
        j0, j1 = fmap.column_range(1, 2)
        np.testing.assert_allclose(fmap.transform_columns(gray, 1, 2), F[:, j0:j1], atol=1e-5)
    else:
        assert not hasattr(fmap, "transform_columns")


def test_raw_whiten(gray):
    F = make_features("raw").transform(gray)
    np.testing.assert_array_equal(F, gray.reshape(5, -1))
    W = make_features("raw", whiten=True).transform(gray)
    np.testing.assert_allclose(W.mean(axis=1), 0, atol=1e-6)
    np.testing.assert_allclose(W.std(axis=1), 1, rtol=1e-5)
    # a constant image is centred, not divided by zero
    flat = make_features("raw", whiten=True).transform(np.full((1, 4, 4), 0.3, np.float32))
    np.testing.assert_array_equal(flat, 0)


def test_input_checks(gray):
    with pytest.raises(InputError, match="max_value"):
        make_features("raw").transform((gray * 255).astype(np.uint8))
    with pytest.raises(InputError, match=r"\(n, H, W\)"):
        make_features("gabor").transform(gray[0])
    with pytest.raises(InputError, match=r"\(n, H, W\)"):
        make_features("raw").transform(gray[0, 0])
    # raw only flattens: it takes (n, d) vectors too (user data given as npz:PATH)
    np.testing.assert_array_equal(make_features("raw").transform(gray[:, 0]), gray[:, 0])
    fmap = make_features("raw").fit(gray)
    with pytest.raises(InputError, match="shape"):
        fmap.transform(gray[:, :10, :10])
    with pytest.raises(InputError, match="fit"):
        _ = make_features("randconv").dim


def test_cached_transform_reuses_and_invalidates(gray, tmp_path, calls):
    key = {"dataset": "synthetic", "split": "train"}
    fmap = make_features("raw")
    a = cached_transform(fmap, gray, key=key, cache_dir=tmp_path)
    b = cached_transform(make_features("raw"), gray, key=key, cache_dir=tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(a, b)
    cached_transform(make_features("raw", whiten=True), gray, key=key, cache_dir=tmp_path)
    cached_transform(make_features("raw"), gray, key={**key, "split": "test"}, cache_dir=tmp_path)
    cached_transform(make_features("raw"), gray[::-1].copy(), key=key, cache_dir=tmp_path)
    cached_transform(make_features("raw", seed=1), gray, key=key, cache_dir=tmp_path)
    assert len(calls) == 5
    assert not list(tmp_path.glob("*.tmp"))
    assert len(list(tmp_path.glob("raw-*.npy"))) == 5
    # learned state is part of the key: the same params fitted on other data miss
    r1 = make_features("randconv", n_filters=2, n_fit_patches=50).fit(gray)
    r2 = make_features("randconv", n_filters=2, n_fit_patches=50).fit(gray[:2])
    cached_transform(r1, gray, key=key, cache_dir=tmp_path)
    cached_transform(r2, gray, key=key, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("randconv-*.npy"))) == 2


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("KERNELFIT_DATA", str(tmp_path))
    assert cache_mod.default_cache_dir() == tmp_path / "features"
    assert cache_mod.default_cache_dir(tmp_path / "other") == tmp_path / "other" / "features"
    monkeypatch.delenv("KERNELFIT_DATA")
    assert cache_mod.default_cache_dir().name == "features"


def test_feature_cache_detects_corrupt_rows(gray, tmp_path, calls, capsys):
    key = {"dataset": "synthetic", "split": "train"}
    fmap = make_features("gabor", pool_grid=4).fit(gray)
    good = cached_transform(fmap, gray, key=key, cache_dir=tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "cached in" in err and str(tmp_path) in err and " kB)" in err
    (path,) = tmp_path.glob("gabor-*.npy")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["feature"] == "gabor" and meta["shape"] == list(good.shape)
    # overwrite two rows in place, same size (what a bad sector or a stray writer does)
    blob = bytearray(path.read_bytes())
    row = good.shape[1] * 4
    blob[-2 * row:] = np.full(2 * good.shape[1], 1e3, np.float32).tobytes()
    path.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match="damaged.*sha256"):
        again = cached_transform(fmap, gray, key=key, cache_dir=tmp_path)
    assert len(calls) == 2  # recomputed, not read
    np.testing.assert_array_equal(again, good)
    np.testing.assert_array_equal(np.load(path), good)  # and the cache repaired
    # read back silently when progress is off, announced when on
    cached_transform(fmap, gray, key=key, cache_dir=tmp_path)
    assert capsys.readouterr().err == "" and len(calls) == 2
    cached_transform(fmap, gray, key=key, cache_dir=tmp_path, progress=True)
    assert "sha256 verified" in capsys.readouterr().err


def test_feature_cache_truncated_or_unrecorded_file_is_recomputed(gray, tmp_path):
    key = {"dataset": "synthetic"}
    fmap = make_features("raw", whiten=True)
    good = cached_transform(fmap, gray, key=key, cache_dir=tmp_path)
    (path,) = tmp_path.glob("raw-*.npy")
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.warns(UserWarning, match="damaged"):
        np.testing.assert_array_equal(cached_transform(fmap, gray, key=key, cache_dir=tmp_path),
                                      good)
    # a file without its sidecar (killed between the writes, or an older cache): a plain miss
    path.with_suffix(".json").unlink()
    np.save(path, np.zeros_like(good))
    np.testing.assert_array_equal(cached_transform(fmap, gray, key=key, cache_dir=tmp_path),
                                  good)

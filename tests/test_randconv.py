import numpy as np
import pytest

from kernelfit.errors import InputError
from kernelfit.features import RandomConvFeatures, make_features
from kernelfit.features.randconv import _quadrant_sums


@pytest.fixture
def images():
    return np.random.default_rng(0).random((6, 9, 9, 3), dtype=np.float32)


def naive_features(fmap, images):
    """Straight from the definition: loops over locations, no folding, no tricks."""
    x = images[..., None] if images.ndim == 3 else images
    p, b = fmap.patch_size, fmap.b
    ho, wo = x.shape[1] - p + 1, x.shape[2] - p + 1
    hs, ws = (ho + 1) // 2, (wo + 1) // 2
    W = fmap.filters_.astype(np.float64)
    out = np.zeros((len(x), fmap.n_filters, 2, 4))
    for i in range(len(x)):
        for r in range(ho):
            for c in range(wo):
                v = x[i, r:r + p, c:c + p].ravel().astype(np.float64)   # (row, col, channel)
                v = (v - v.mean()) / np.sqrt(v.var() + fmap.contrast_eps)
                z = W @ (fmap.zca_ @ (v - fmap.mean_))
                q = 2 * (r >= hs) + (c >= ws)
                out[i, :, 0, q] += np.maximum(0, z - b)
                out[i, :, 1, q] += np.maximum(0, -z - b)
    return out.reshape(len(x), -1)


def test_quadrant_sums_by_hand():
    z = np.arange(9, dtype=np.float32).reshape(9, 1)       # one 3x3 map, one filter
    # split at ceil(3/2) = 2: TL 0+1+3+4, TR 2+5, BL 6+7, BR 8
    np.testing.assert_array_equal(_quadrant_sums(z, 1, 3, 3, 2, 2), [[[8, 7, 13, 8]]])


def test_tiny_image_and_filter_by_hand():
    fmap = RandomConvFeatures(n_filters=1, patch_size=1, n_fit_patches=10, b=0.5)
    fmap.fit(np.random.default_rng(0).random((2, 2, 2, 3), dtype=np.float32))
    d = 3
    # hand-set state: zero mean, identity whitening, the filter e_0 (the red channel);
    # with p = 1 a "patch" is one RGB pixel, normalized to (v - mean(v)) / std(v)
    fmap.mean_, fmap.zca_ = np.zeros(d), np.eye(d)
    fmap.filters_ = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    fmap.contrast_eps = 1e-12          # black pixels: 0 / 1e-6 = 0, so z = 0
    fmap.A_aug_ = np.array([[1.0], [0.0], [0.0], [-0.5]], dtype=np.float32)
    img = np.zeros((1, 2, 2, 3), dtype=np.float32)
    img[0, 0, 0] = (1, 0, 0)           # red pixel, top-left quadrant
    img[0, 1, 1] = (0, 1, 0)           # green pixel, bottom-right quadrant
    zr = (2 / 3) / np.sqrt(2 / 9)      # (1 - 1/3) / std(1, 0, 0), std^2 = 2/9
    zg = (-1 / 3) / np.sqrt(2 / 9)
    F = fmap.transform(img).reshape(2, 4)
    # each quadrant of the 2x2 map is one pixel: rows are (sign, quadrant TL TR BL BR)
    np.testing.assert_allclose(F[0], [zr - 0.5, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(F[1], [0, 0, 0, -zg - 0.5], atol=1e-6)


@pytest.mark.parametrize("filters_from", ["gaussian", "patches"])
def test_matches_naive_definition(images, filters_from):
    fmap = make_features("randconv", n_filters=5, patch_size=3, n_fit_patches=500,
                         filters_from=filters_from, block_filters=2, seed=3).fit(images)
    F = fmap.transform(images)
    assert F.shape == (6, 40) == (6, fmap.dim) and F.dtype == np.float32
    np.testing.assert_allclose(F, naive_features(fmap, images), rtol=1e-4, atol=2e-4)
    norms = np.linalg.norm(fmap.filters_, axis=1)
    np.testing.assert_allclose(norms, 1, rtol=1e-5)


def test_zca_whitens_patches():
    x = np.random.default_rng(1).random((40, 12, 12), dtype=np.float32)
    fmap = RandomConvFeatures(n_filters=2, patch_size=3, zca_eps=1e-8,
                              n_fit_patches=20000).fit(x)
    P = fmap._sample_patches(x[..., None], np.random.default_rng(7), 20000).astype(np.float64)
    Wt = (P - fmap.mean_) @ fmap.zca_
    cov = Wt.T @ Wt / len(Wt)
    # contrast normalization removes each patch's mean: the all-ones direction has no
    # variance, every other direction is whitened to 1
    d = P.shape[1]
    expected = np.eye(d) - np.ones((d, d)) / d
    np.testing.assert_allclose(cov, expected, atol=0.05)


def test_seeded_and_columns(images):
    a = make_features("randconv", n_filters=7, patch_size=4, n_fit_patches=300, seed=1)
    b = make_features("randconv", n_filters=7, patch_size=4, n_fit_patches=300, seed=1)
    c = make_features("randconv", n_filters=7, patch_size=4, n_fit_patches=300, seed=2)
    Fa, Fb = a.fit(images).transform(images), b.fit(images).transform(images)
    np.testing.assert_array_equal(Fa, Fb)
    assert a.state_fingerprint() == b.state_fingerprint() != c.fit(images).state_fingerprint()
    assert a.n_column_chunks(3) == 3
    cols = [a.transform_columns(images, k, 3) for k in range(3)]
    assert [x.shape[1] for x in cols] == [24, 24, 8]
    np.testing.assert_allclose(np.hstack(cols), Fa, rtol=1e-5, atol=1e-5)
    one = RandomConvFeatures(n_filters=7, patch_size=4, n_fit_patches=300, seed=1, n_jobs=1)
    np.testing.assert_allclose(one.fit(images).transform(images), Fa, rtol=1e-5, atol=1e-5)


def test_errors(images):
    fmap = make_features("randconv", n_filters=2)
    with pytest.raises(InputError, match="fit"):
        fmap.transform(images)
    with pytest.raises(InputError, match="filters_from"):
        make_features("randconv", filters_from="kmeans")
    with pytest.raises(InputError, match="out of range"):
        fmap.fit(images).transform_columns(images, 5, 1)


def test_no_shape_assignment_and_no_numpy_deprecation(images):
    """NumPy 2.5 deprecates setting ``ndarray.shape`` (121 warnings in the suite there);
    the patch matrix is filled through a reshape view instead."""
    import ast
    import pathlib
    import warnings

    import kernelfit.features as features

    for path in pathlib.Path(features.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                assert not any(isinstance(t, ast.Attribute) and t.attr == "shape"
                               for t in targets), f"{path.name}:{node.lineno} sets .shape"
    fmap = RandomConvFeatures(n_filters=3, patch_size=3, n_fit_patches=40).fit(images)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        F = fmap.transform(images)
    np.testing.assert_allclose(F, naive_features(fmap, images), rtol=1e-4, atol=1e-4)

"""The randomization tests of paper section 2.1: rates, shared / independent permutations,
Gaussian statistics, determinism, and that test labels never change."""

from __future__ import annotations

import numpy as np
import pytest

from kernelfit.data import Dataset
from kernelfit.data.randomize import Randomization, parse_randomization
from kernelfit.errors import InputError

CLASSES = tuple(str(i) for i in range(10))


def make(n, shape=(8, 8), seed=0, split="train", offset=0):
    """Images whose pixel at flat position j of image k holds (j + k + offset) % 256."""
    rng = np.random.default_rng(seed)
    pos = np.arange(int(np.prod(shape[:2])))
    base = (pos[None, :] + np.arange(n)[:, None] + offset) % 256
    if len(shape) == 3:  # RGB: channel c holds (value + 85 c) % 256, a triple per position
        base = (base[..., None] + 85 * np.arange(shape[2])) % 256
    images = np.ascontiguousarray(base.reshape((n,) + shape).astype(np.uint8))
    return Dataset("synthetic", split, images, rng.integers(0, 10, n).astype(np.int64),
                   CLASSES, 255.0, {})


@pytest.fixture
def pair():
    return make(400), make(100, seed=1, split="test", offset=7)


def test_parse_and_describe():
    assert parse_randomization("none").describe() == "none"
    assert parse_randomization("true-labels").describe() == "none"
    assert parse_randomization(None).describe() == "none"
    assert parse_randomization("labels:0.5") == Randomization("labels", 0.5)
    assert parse_randomization("labels:0.5").describe() == "labels:0.5"
    assert parse_randomization("random-labels").describe() == "random-labels"
    for spec in ("shuffled-pixels", "random-pixels", "gaussian"):
        assert parse_randomization(spec).describe() == spec
    for bad in ("labels:1.5", "labels:", "labels:x", "noise", "labels:-0.1"):
        with pytest.raises(InputError, match="valid: none, true-labels, labels:P"):
            parse_randomization(bad)


@pytest.mark.parametrize("p", [0.2, 0.5, 1.0])
def test_label_corruption_rate_is_p_times_nine_tenths(p):
    n = 20000
    train, test = make(n, shape=(2, 2)), make(50, shape=(2, 2), split="test")
    spec = "random-labels" if p == 1.0 else f"labels:{p}"
    new_train, new_test = parse_randomization(spec).apply(train, test, seed=0)
    changed = np.mean(new_train.labels != train.labels)
    q = p * (1 - 1 / 10)
    assert abs(changed - q) < 5 * np.sqrt(q * (1 - q) / n)
    np.testing.assert_array_equal(new_test.labels, test.labels)
    np.testing.assert_array_equal(new_train.images, train.images)
    assert new_train.labels.dtype == np.int64 and new_train.labels.max() <= 9
    assert new_train.provenance["randomization"] == spec


def _recovered_permutation(before_offsets, out_images):
    # out[k, j] = in[k, perm[j]] = (perm[j] + offset_k) % 256  =>  perm[j] = out - offset_k.
    flat = out_images.reshape(len(out_images), -1).astype(int)
    return (flat - before_offsets[:, None]) % 256


def test_shuffled_pixels_one_permutation_for_train_and_test(pair):
    train, test = pair
    new_train, new_test = parse_randomization("shuffled-pixels").apply(train, test, seed=5)
    perms = np.concatenate([_recovered_permutation(np.arange(400), new_train.images),
                            _recovered_permutation(np.arange(100) + 7, new_test.images)])
    assert np.all(perms == perms[0])
    assert sorted(perms[0]) == list(range(64)) and not np.array_equal(perms[0], np.arange(64))
    np.testing.assert_array_equal(new_train.labels, train.labels)
    np.testing.assert_array_equal(new_test.labels, test.labels)


def test_shuffled_pixels_rgb_keeps_channels_together():
    train, test = make(30, shape=(8, 8, 3)), make(10, shape=(8, 8, 3), split="test")
    new_train, new_test = parse_randomization("shuffled-pixels").apply(train, test, seed=1)
    for old, new in ((train, new_train), (test, new_test)):
        px_old = old.images.reshape(len(old), 64, 3).astype(int)
        px_new = new.images.reshape(len(new), 64, 3).astype(int)
        # Each moved pixel is still a (v, v+85, v+170) triple from the original image.
        np.testing.assert_array_equal((px_new[..., 1] - px_new[..., 0]) % 256, 85)
        np.testing.assert_array_equal(np.sort(px_new[..., 0], 1), np.sort(px_old[..., 0], 1))
    perm_tr = _recovered_permutation(np.arange(30), new_train.images[..., 0])
    perm_te = _recovered_permutation(np.arange(10), new_test.images[..., 0])
    assert np.all(perm_tr == perm_tr[0]) and np.all(perm_te == perm_tr[0])


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 3)])
def test_random_pixels_independent_and_value_preserving(shape):
    train, test = make(400, shape), make(100, shape, split="test", offset=7)
    new_train, new_test = parse_randomization("random-pixels").apply(train, test, seed=2)
    for old, new in ((train, new_train), (test, new_test)):
        px_old = old.images.reshape(len(old), 64, -1)
        px_new = new.images.reshape(len(new), 64, -1)
        # Each image keeps its multiset of pixels (whole RGB triples).
        for k in range(len(old)):
            np.testing.assert_array_equal(np.unique(px_old[k], axis=0, return_counts=True)[1],
                                          np.unique(px_new[k], axis=0, return_counts=True)[1])
            np.testing.assert_array_equal(np.sort(px_old[k], 0), np.sort(px_new[k], 0))
        np.testing.assert_array_equal(new.labels, old.labels)
    perms = _recovered_permutation(np.arange(400), new_train.images.reshape(400, 64, -1)[..., 0])
    assert len({tuple(p) for p in perms}) == 400  # independent: all different


def test_gaussian_matches_training_mean_and_variance():
    rng = np.random.default_rng(0)
    train = Dataset("s", "train", rng.integers(0, 200, (2000, 8, 8), dtype=np.uint8),
                    rng.integers(0, 10, 2000), CLASSES, 255.0, {})
    test = Dataset("s", "test", rng.integers(0, 50, (500, 8, 8), dtype=np.uint8),
                   rng.integers(0, 10, 500), CLASSES, 255.0, {})
    new_train, new_test = parse_randomization("gaussian").apply(train, test, seed=0)
    mean, std = train.images.mean(), train.images.std()
    for new, old in ((new_train, train), (new_test, test)):
        assert new.images.dtype == np.float32 and new.images.shape == old.images.shape
        assert new.images.flags.c_contiguous
        n = new.images.size
        assert abs(new.images.mean() - mean) < 5 * std / np.sqrt(n)
        assert abs(new.images.std() / std - 1) < 5 / np.sqrt(2 * n)
        np.testing.assert_array_equal(new.labels, old.labels)


@pytest.mark.parametrize("spec", ["labels:0.3", "random-labels", "shuffled-pixels",
                                  "random-pixels", "gaussian"])
def test_same_seed_same_bits_and_inputs_untouched(pair, spec):
    train, test = pair
    before = (train.images.copy(), train.labels.copy(), test.images.copy(), test.labels.copy())
    r = parse_randomization(spec)
    a, b = r.apply(train, test, seed=11), r.apply(train, test, seed=11)
    c = r.apply(train, test, seed=12)
    for x, y in zip(a, b, strict=True):
        assert x.images.tobytes() == y.images.tobytes()
        assert x.labels.tobytes() == y.labels.tobytes()
    assert (a[0].images.tobytes() != c[0].images.tobytes()
            or a[0].labels.tobytes() != c[0].labels.tobytes())
    for got, want in zip((train.images, train.labels, test.images, test.labels), before,
                         strict=True):
        np.testing.assert_array_equal(got, want)


def test_none_returns_inputs(pair):
    train, test = pair
    assert parse_randomization("none").apply(train, test, seed=0) == (train, test)

"""Preprocessing steps, checked numerically (paper appendix A's CIFAR-10 pipeline)."""

from __future__ import annotations

import numpy as np
import pytest

from kernelfit.data.preprocess import Preprocessing, center_crop, flatten, per_image_whiten, scale
from kernelfit.errors import InputError


def test_scale_to_unit_interval():
    x = np.array([[[0, 128], [255, 1]]], np.uint8)
    out = scale(x, 255)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x / 255.0, rtol=1e-7)
    assert out.max() == 1.0 and out.min() == 0.0
    np.testing.assert_allclose(scale(np.full((1, 2, 2), 16, np.uint8), 16.0), 1.0)


def test_center_crop_32_to_28_gray_and_rgb():
    x = np.arange(2 * 32 * 32 * 3).reshape(2, 32, 32, 3)
    out = center_crop(x, 28)
    assert out.shape == (2, 28, 28, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, x[:, 2:30, 2:30])
    g = np.arange(5 * 5).reshape(1, 5, 5)
    np.testing.assert_array_equal(center_crop(g, 2), g[:, 1:3, 1:3])  # odd margin: extra at end
    np.testing.assert_array_equal(center_crop(g, 5), g)
    with pytest.raises(InputError, match="does not fit"):
        center_crop(g, 6)
    with pytest.raises(InputError, match="before flatten"):
        center_crop(g.reshape(1, 25), 3)


def test_whiten_normal_image_has_mean_0_std_1():
    rng = np.random.default_rng(0)
    x = rng.normal(100, 30, (3, 32, 32, 3)).astype(np.float32)
    out = per_image_whiten(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    flat = out.reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(flat.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(flat.std(1), 1, rtol=1e-5)
    # The formula itself, per image.
    ref = (x[1] - x[1].mean(dtype=np.float64)) / x[1].std(dtype=np.float64)
    np.testing.assert_allclose(out[1], ref, rtol=1e-4, atol=1e-5)


def test_whiten_floor_on_constant_and_nearly_constant_images():
    n_values = 28 * 28 * 3
    const = np.full((1, 28, 28, 3), 0.7, np.float32)
    np.testing.assert_array_equal(per_image_whiten(const), 0.0)  # finite, not NaN
    near = const.copy()
    near[0, 0, 0, 0] += 1e-3  # std far below 1/sqrt(N): the floor divides instead
    out = per_image_whiten(near)
    flat = near.reshape(-1).astype(np.float64)
    assert flat.std() < 1 / np.sqrt(n_values)
    np.testing.assert_allclose(out.reshape(-1), (flat - flat.mean()) * np.sqrt(n_values),
                               rtol=1e-4, atol=1e-6)


def test_flatten():
    x = np.zeros((4, 28, 28, 3), np.uint8)
    assert flatten(x).shape == (4, 2352)
    assert flatten(np.zeros((4, 8, 8))).shape == (4, 64)


def test_pipeline_parse_apply_describe():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    pre = Preprocessing.parse("scale, crop:28,whiten,flatten")
    assert pre.steps == ["scale", "crop:28", "whiten", "flatten"]
    out = pre.apply(images, 255)
    ref = flatten(per_image_whiten(center_crop(scale(images, 255), 28)))
    assert out.dtype == np.float32 and out.shape == (5, 28 * 28 * 3)
    np.testing.assert_array_equal(out, ref)
    lines = pre.describe()
    assert len(lines) == 4 and lines[1].startswith("crop:28") and "28x28" in lines[1]
    none = Preprocessing.parse("none")
    assert none.steps == [] and none.apply(images, 255).dtype == np.float32
    assert Preprocessing.parse("").steps == []


@pytest.mark.parametrize("bad", ["crop", "crop:x", "crop:0", "blur", "scale:3", "whiten:1"])
def test_bad_steps_raise_input_error(bad):
    with pytest.raises(InputError):
        Preprocessing.parse(bad)

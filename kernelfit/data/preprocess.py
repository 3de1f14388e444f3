"""Named, composable preprocessing steps, so a run record can say exactly what was done.

Flat ``(n, d)`` rows (user data saved as vectors) take every step but crop:
scale divides, whiten standardizes each row, flatten leaves them as they are.

``Preprocessing.parse("scale,crop:28,whiten,flatten")`` is the pipeline of
the paper's appendix A (CIFAR-10 inputs for the SGD-trained networks):
pixels / 255, centre crop 32 -> 28, per-image whitening, then one row per
image.
"""

from __future__ import annotations

import numpy as np

from kernelfit.errors import InputError


def scale(images, max_value) -> np.ndarray:
    """``images / max_value`` as float32, in [0, 1] for data within its range."""
    return np.asarray(images, dtype=np.float32) / np.float32(max_value)


def center_crop(images, size: int) -> np.ndarray:
    """The central ``size x size`` window of each image (``(n, H, W[, C])``), C-contiguous.

    When ``H - size`` is odd the extra row (column) is dropped at the bottom
    (right), as TensorFlow's ``central_crop`` / ``resize_with_crop_or_pad`` do.
    """
    images = np.asarray(images)
    if images.ndim == 2:
        raise InputError(f"crop needs images shaped (n, H, W) or (n, H, W, C), got flat rows "
                         f"{images.shape} (an npz of (n, d) vectors, or a flatten step "
                         "before it), which have no centre to crop: drop crop, or crop "
                         "before flatten")
    if images.ndim not in (3, 4):
        raise InputError(f"crop needs images shaped (n, H, W) or (n, H, W, C), got "
                         f"{images.shape}")
    h, w = images.shape[1:3]
    if not 0 < size <= min(h, w):
        raise InputError(f"crop size {size} does not fit {h}x{w} images")
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(images[:, top:top + size, left:left + size])


def per_image_whiten(images) -> np.ndarray:
    """Per image: ``(x - mean) / max(std, 1 / sqrt(N))``, N its number of values.

    TensorFlow's ``per_image_standardization``: the floor keeps a constant
    image (std 0) finite -- it becomes all zeros. Float32 out; the mean and
    std accumulate in float64.
    """
    x = np.asarray(images, dtype=np.float32)
    flat = x.reshape(len(x), -1)
    mean = flat.mean(axis=1, dtype=np.float64, keepdims=True)
    std = flat.std(axis=1, dtype=np.float64, keepdims=True)
    adjusted = np.maximum(std, 1.0 / np.sqrt(max(flat.shape[1], 1)))
    return ((flat - mean) / adjusted).astype(np.float32).reshape(x.shape)


def flatten(images) -> np.ndarray:
    """One row per image: ``(n, d)``."""
    images = np.asarray(images)
    return np.ascontiguousarray(images.reshape(len(images), -1))


# name -> (takes an integer argument, one-line description for records)
STEPS = {
    "scale": (False, "divide by the dataset's max value, to [0, 1]"),
    "crop": (True, "central crop to {arg}x{arg}"),
    "whiten": (False, "per-image (x - mean) / max(std, 1/sqrt(N))"),
    "flatten": (False, "one row per image"),
}


class Preprocessing:
    """An ordered list of steps from :data:`STEPS`, parsed from ``"scale,crop:28,whiten"``.

    Attributes
    ----------
    steps : list of str
        The normalized step specs, e.g. ``["scale", "crop:28", "whiten"]``.
    """

    def __init__(self, steps=()):
        self.steps = [self._check(s) for s in steps]

    @staticmethod
    def _check(step: str) -> str:
        name, _, arg = step.strip().partition(":")
        if name not in STEPS:
            raise InputError(f"unknown preprocessing step {step!r}; valid: scale, crop:SIZE, "
                             "whiten, flatten (comma-separated, applied in order)")
        if STEPS[name][0]:
            if not arg.isdigit() or int(arg) <= 0:
                raise InputError(f"step {step!r} needs a positive integer, e.g. {name}:28")
            return f"{name}:{int(arg)}"
        if arg:
            raise InputError(f"step {name!r} takes no argument, got {step!r}")
        return name

    @classmethod
    def parse(cls, spec: str | None) -> Preprocessing:
        """Parse ``"scale,crop:28,whiten,flatten"``; ``""``, ``"none"`` or None is no steps."""
        if spec is None or spec.strip() in ("", "none"):
            return cls()
        return cls([s for s in spec.split(",") if s.strip()])

    def apply(self, images, max_value) -> np.ndarray:
        """Run the steps in order; the result is float32 whatever the steps."""
        x = images
        for step in self.steps:
            name, _, arg = step.partition(":")
            if name == "scale":
                x = scale(x, max_value)
            elif name == "crop":
                x = center_crop(x, int(arg))
            elif name == "whiten":
                x = per_image_whiten(x)
            else:
                x = flatten(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def describe(self) -> list[str]:
        """One line per step, for run records and reports."""
        out = []
        for step in self.steps:
            name, _, arg = step.partition(":")
            out.append(f"{step}: " + STEPS[name][1].format(arg=arg))
        return out

    def __repr__(self) -> str:
        return f"Preprocessing.parse({','.join(self.steps) or 'none'!r})"

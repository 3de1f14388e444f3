"""Feature matrices cached on disk, keyed by everything that defines them.

Table 3 and the sweeps featurize the same images with the same map many
times; the second time is a file read. The key hashes the caller's ``key``
(data set, split, sizes), the map's name, parameters and seed, a fingerprint
of what its ``fit`` learned, and the sha1 of the image bytes, so any change
to any of them misses the cache instead of returning stale features.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from .base import FeatureMap, as_images


def default_cache_dir() -> Path:
    """``$KERNELFIT_DATA/features``, else the user cache directory's ``kernelfit/features``."""
    home = os.environ.get("KERNELFIT_DATA")
    if home:
        return Path(home).expanduser() / "features"
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("kernelfit")) / "features"


def images_sha1(images: np.ndarray) -> str:
    """sha1 of an image array's bytes, shape and dtype."""
    a = np.ascontiguousarray(images)
    h = hashlib.sha1(str((a.shape, a.dtype.str)).encode())
    h.update(a.view(np.uint8).ravel())
    return h.hexdigest()


def cache_key(fmap: FeatureMap, images: np.ndarray, key: dict) -> str:
    """The sha256 that names the cached features of ``images`` under ``fmap``."""
    record = {"key": key, "name": fmap.name, "params": fmap.params, "seed": fmap.seed,
              "fitted": fmap.state_fingerprint(), "images": images_sha1(images)}
    blob = json.dumps(record, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


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
        JSON-able description of where the images came from (data set, split,
        n, seed): makes the file names traceable; correctness does not rest on
        it, since the image bytes are hashed too.
    cache_dir : path, optional
        Defaults to :func:`default_cache_dir`.

    Returns
    -------
    float32 ndarray (n, dim). Written atomically (temporary file, then rename),
    so a killed run never leaves a partial file that a later run would trust.
    """
    images = as_images(images)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = cache_key(fmap, images, key)
    path = folder / f"{fmap.name}-{digest[:32]}.npy"
    if path.exists():
        try:
            feats = np.load(path)
            expected = (len(images), fmap.dim_for(images.shape[1:]))
            if feats.shape == expected and feats.dtype == np.float32:
                return feats
        except (OSError, ValueError, EOFError):
            pass  # unreadable: recompute and overwrite
    feats = fmap.transform(images, progress=progress)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, feats)
    return feats

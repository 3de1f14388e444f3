"""The saved-model container: a JSON header and named arrays in one ZIP file, nothing pickled.

Layout (a ``.npz``-style ZIP archive, members stored uncompressed)::

    header.json     UTF-8 JSON: "format": "kernelfit-model", "version": 2, the
                    writer's kernelfit version, what the model is (see
                    :mod:`.saved_model`) and, under "arrays", every array's
                    dtype, shape, bytes and sha256
    NAME.npy        one NumPy array per entry of "arrays" (numeric dtypes only)

Why this layout: JSON and ``.npy`` data are read as numbers and text, so no
byte of the file is ever executed (a pickle runs whatever its author put in
it, and a checksum its author also wrote proves nothing). ``numpy.load`` and
``unzip -p FILE header.json`` can read it anywhere.

Reading trusts nothing: the header's fields are type- and range-checked,
each ``.npy`` header's dtype and shape must be the ones the JSON header
lists (an object dtype, i.e. a pickle, is refused before any of its bytes is
read), the member's size must be exactly that many bytes, stored (a
compressed member could inflate without bound), and its sha256 must match.
Any failure is a :class:`~kernelfit.errors.ModelFileError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from kernelfit.atomic import atomic_path
from kernelfit.errors import InputError, ModelFileError
from kernelfit.formats import read_npy_header
from kernelfit.params import whole

FORMAT = "kernelfit-model"
VERSION = 2
HEADER = "header.json"
#: The first bytes of format 1 (a Python pickle behind a one-line header), refused unread.
PICKLE_MAGIC = b"KERNELFIT-MODEL\n"
_ZIP_MAGIC = b"PK\x03\x04"
# A header is a few kB (the run record with a CG history at most); more is not a header.
_MAX_HEADER_BYTES = 16 * 2**20
# Array dtypes a model holds: numbers only (kind b, i, u, f), never objects.
_KINDS = "biuf"
_CHUNK = 2**24
# .npy header readers by version (both parse the header with ast.literal_eval: no code runs).
OLD_FORMAT = ("was saved by an older kernelfit (model format 1, a Python pickle), which this "
              "kernelfit never loads (unpickling would run whatever code the file holds), so "
              "the model must be refit and saved again")


def array_entry(arr: np.ndarray) -> dict:
    """What the header records of one array: dtype, shape, bytes, sha256."""
    arr = np.ascontiguousarray(arr)
    return {"dtype": arr.dtype.str, "shape": list(arr.shape), "bytes": int(arr.nbytes),
            "sha256": hashlib.sha256(arr.reshape(-1).view(np.uint8)).hexdigest()}


def write_model_file(path, header: dict, arrays: dict) -> Path:
    """Write ``header`` (JSON-able) and ``arrays`` to ``path`` atomically.

    ``header`` gets "format", "version", "kernelfit" and "arrays" added.

    Raises
    ------
    InputError
        An array that is not numeric (an object array would need pickle).
    OutputPathError, OSError
        ``path`` cannot be written; nothing is left half-written.
    """
    from kernelfit import __version__

    arrays = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    for name, a in arrays.items():
        if a.dtype.kind not in _KINDS or a.dtype.hasobject:
            raise InputError(f"model array {name} has dtype {a.dtype}; a saved model holds "
                             "numbers only")
    header = {"format": FORMAT, "version": VERSION, "kernelfit": __version__, **header,
              "arrays": {name: array_entry(a) for name, a in arrays.items()}}
    text = json.dumps(header, allow_nan=False).encode()
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr(HEADER, text)
            for name, a in arrays.items():
                with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, a, allow_pickle=False)
    return Path(path)


def read_model_file(path) -> tuple[dict, dict]:
    """The header (checked as far as the container goes) and the arrays of a model file.

    Raises
    ------
    ModelFileError
        Not a model file, format 1 (pickle), another format version, a header
        field of the wrong type or range, an array that differs from its header
        entry, a truncated or damaged file.
    InputError
        No file (or a directory) at ``path``.
    """
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as fh:
            start = fh.read(len(PICKLE_MAGIC))
    except FileNotFoundError:
        raise InputError(f"no model file at {path}; write one with `kernelfit run "
                         "--save-model PATH`") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory; give the model file inside it") from None
    if start.startswith(PICKLE_MAGIC):
        raise ModelFileError(path, OLD_FORMAT)
    if not start.startswith(_ZIP_MAGIC):
        raise ModelFileError(path, "is not a kernelfit model file (not a ZIP archive with a "
                                   f"{HEADER} member)")
    try:
        with zipfile.ZipFile(path) as z:
            return _read_archive(path, z)
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError, ValueError,
            NotImplementedError) as err:
        raise ModelFileError(path, f"is truncated or damaged ({err})") from err


def _read_archive(path: Path, z: zipfile.ZipFile) -> tuple[dict, dict]:
    infos = z.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise ModelFileError(path, "has two members of the same name (damaged or forged)")
    if HEADER not in names:
        raise ModelFileError(path, f"is not a kernelfit model file (no {HEADER} member)")
    header = _read_header(path, z, z.getinfo(HEADER))
    spec = header_arrays(path, header)
    expected = {HEADER, *(f"{name}.npy" for name in spec)}
    if set(names) != expected:
        missing, extra = sorted(expected - set(names)), sorted(set(names) - expected)
        raise ModelFileError(path, "does not hold the members its header lists"
                             + (f"; missing {', '.join(missing)} (truncated?)" if missing else "")
                             + (f"; not listed: {', '.join(extra)}" if extra else ""))
    size = path.stat().st_size
    arrays = {name: _read_array(path, z, z.getinfo(f"{name}.npy"), entry, size)
              for name, entry in spec.items()}
    return header, arrays


def _stored(path: Path, info: zipfile.ZipInfo, size: int) -> None:
    # A stored member takes its own bytes in the file: no decompression bomb.
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size \
            or info.file_size > size:
        raise ModelFileError(path, f"member {info.filename} is compressed or larger than the "
                                   "file (kernelfit writes members stored)")


def _read_header(path: Path, z: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict:
    _stored(path, info, path.stat().st_size)
    if info.file_size > _MAX_HEADER_BYTES:
        raise ModelFileError(path, f"has a {info.file_size:,}-byte {HEADER}; a model header "
                                   f"is at most {_MAX_HEADER_BYTES:,} bytes")
    raw = z.read(info)                       # CRC-checked by zipfile

    def refuse_constant(token):
        raise ValueError(f"{token} is not strict JSON")

    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=refuse_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise ModelFileError(path, f"has a damaged header ({err})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(path, f"is not a kernelfit model file ({HEADER} does not say "
                                   f'"format": "{FORMAT}")')
    version = header.get("version")
    if type(version) is not int or version != VERSION:
        writer = header.get("kernelfit")
        by = f" (written by kernelfit {writer})" if isinstance(writer, str) else ""
        raise ModelFileError(path, f"has model format version {version!r}{by}, and this "
                                   f"kernelfit reads format version {VERSION} only (load it "
                                   "with the kernelfit that wrote it, or refit)")
    text(path, header, "kernelfit")
    return header


def header_arrays(path: Path, header: dict) -> dict:
    """The "arrays" entry, every field checked: name -> (dtype, shape, bytes, sha256)."""
    arrays = field(path, header, "arrays", dict)
    out = {}
    for name, entry in arrays.items():
        where = f"arrays.{name}"
        if not name or not all(c.isalnum() or c in "._-" for c in name):
            raise ModelFileError(path, f"header field {where}: not an array name")
        if not isinstance(entry, dict):
            raise ModelFileError(path, f"header field {where} must be an object, got "
                                       f"{type(entry).__name__}")
        code = text(path, entry, "dtype", where)
        try:
            dtype = np.dtype(code)
        except (TypeError, ValueError):
            dtype = None
        if dtype is None or dtype.kind not in _KINDS or dtype.hasobject or dtype.str != code:
            raise ModelFileError(path, f"header field {where}.dtype must be a numeric NumPy "
                                       f"dtype such as '<f8', got {code!r}")
        shape = field(path, entry, "shape", list, where)
        if len(shape) > 4:
            raise ModelFileError(path, f"header field {where}.shape has {len(shape)} axes; "
                                       "model arrays have at most 4")
        shape = tuple(number(path, f"{where}.shape", s, whole, 0) for s in shape)
        nbytes = number(path, f"{where}.bytes", entry.get("bytes"), whole, 0)
        takes = math.prod(shape) * dtype.itemsize
        if nbytes != takes:
            raise ModelFileError(path, f"header field {where}.bytes = {nbytes:,} is not what "
                                       f"{dtype} {shape} takes ({takes:,})")
        digest = text(path, entry, "sha256", where)
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ModelFileError(path, f"header field {where}.sha256 is not a sha256 digest")
        out[name] = (dtype, shape, nbytes, digest)
    return out


def _read_array(path: Path, z: zipfile.ZipFile, info: zipfile.ZipInfo, entry, size: int):
    dtype, shape, nbytes, digest = entry
    _stored(path, info, size)
    what = f"member {info.filename}"
    with z.open(info) as fh:
        try:
            got_shape, fortran, got_dtype = read_npy_header(fh)
        except ValueError as err:
            raise ModelFileError(path, f"{what}: {err}") from None
        if got_dtype.hasobject:
            raise ModelFileError(path, f"{what} holds Python objects (a pickle), which "
                                       "kernelfit never loads")
        if got_dtype != dtype or tuple(got_shape) != shape or fortran:
            raise ModelFileError(path, f"{what} is {got_dtype} {tuple(got_shape)}"
                                       f"{' (Fortran order)' if fortran else ''}, but the "
                                       f"header says {dtype} {shape}")
        if info.file_size != fh.tell() + nbytes:
            raise ModelFileError(path, f"{what} holds {info.file_size - fh.tell():,} bytes of "
                                       f"data where its header says {nbytes:,}")
        arr = np.empty(shape, dtype=dtype)
        flat = arr.reshape(-1).view(np.uint8)
        h = hashlib.sha256()
        pos = 0
        while pos < nbytes:
            got = fh.readinto(flat[pos:pos + _CHUNK])
            if not got:
                raise ModelFileError(path, f"{what} is truncated")
            h.update(flat[pos:pos + got])
            pos += got
        fh.read(1)      # reaching the end makes zipfile check the member's CRC
    if h.hexdigest() != digest:
        raise ModelFileError(path, f"{what} does not match its recorded sha256 (damaged or "
                                   "modified)")
    return arr


# -- header fields, checked: each failure names the field and what it must be -------------

def field(path, obj: dict, key: str, kind: type, where: str = ""):
    """``obj[key]``, which must be present and of ``kind`` (bool is never an int here)."""
    name = f"{where}.{key}" if where else key
    if key not in obj:
        raise ModelFileError(path, f"header field {name} is missing")
    v = obj[key]
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
        raise ModelFileError(path, f"header field {name} must be {kind.__name__}, got "
                                   f"{type(v).__name__} {v!r}"[:300])
    return v


def text(path, obj: dict, key: str, where: str = "") -> str:
    return field(path, obj, key, str, where)


def number(path, name: str, v, check, *bounds, **options):
    """``check(name, v, *bounds)`` (:func:`~kernelfit.params.whole` or ``real``), failing as
    a :class:`ModelFileError`: a number given as text (``"bytes": "182771"``) is refused."""
    try:
        return check(f"header field {name}", v, *bounds, **options)
    except InputError as err:
        raise ModelFileError(path, str(err)) from None

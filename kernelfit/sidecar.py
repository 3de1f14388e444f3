"""A file and its JSON sidecar (size, sha256, and what the file holds), sidecar written last.

The sidecar is the commit marker: it is removed before the file is
rewritten and written only after it, both through :mod:`kernelfit.atomic`,
so a file without its sidecar (a killed write, or a file kernelfit did not
write) is a miss, and a file whose bytes differ from its sidecar is damaged
or edited. Used by the feature cache and the SGD checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kernelfit.atomic import write_bytes_atomic, write_json_atomic


def write_with_sidecar(path, blob: bytes, meta_path, record: dict) -> Path:
    """Write ``blob`` to ``path``, then ``{"sha256", "bytes", **record}`` to ``meta_path``."""
    path, meta_path = Path(path), Path(meta_path)
    meta_path.unlink(missing_ok=True)  # from here until the new sidecar lands: a miss
    write_bytes_atomic(path, blob)
    write_json_atomic(meta_path, {"sha256": hashlib.sha256(blob).hexdigest(),
                                  "bytes": len(blob), **record})
    return path


def read_with_sidecar(path, meta_path) -> tuple[bytes | None, dict, str | None]:
    """The bytes at ``path`` if its sidecar vouches for them.

    Returns
    -------
    blob, meta, problem
        ``(blob, meta, None)``: the bytes match the recorded size and sha256.
        ``(None, {}, None)``: no file or no readable sidecar (a miss).
        ``(None, meta, problem)``: the bytes differ from the sidecar (``problem`` says how).
    """
    path, meta_path = Path(path), Path(meta_path)
    try:
        meta = json.loads(meta_path.read_text())
        blob = path.read_bytes()
    except (OSError, ValueError):
        return None, {}, None
    if not isinstance(meta, dict):
        return None, {}, "its sidecar is not a JSON object"
    if len(blob) != meta.get("bytes"):
        return None, meta, f"{len(blob)} bytes, recorded {meta.get('bytes')}"
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        return None, meta, "sha256 differs from the one recorded when it was written"
    return blob, meta, None

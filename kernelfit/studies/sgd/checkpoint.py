"""Per-epoch checkpoints of an SGD run, read back without running any code they carry.

``NAME.ckpt`` holds ``torch.save`` of plain things only: the model's and the
optimizer's state dicts (tensors, numbers, lists), the per-epoch history,
the step and epoch counts. ``NAME.ckpt.json`` (:mod:`kernelfit.sidecar`,
written after it) holds its size and sha256 and the run's key: the settings,
the data's fingerprint and the kernelfit version that made it.

A checkpoint is resumed from only when its key is the run's, its bytes match
the sidecar, and ``torch.load(..., weights_only=True)`` reads it: that loader
refuses any pickled object other than tensors and plain containers, so even
a file forged together with its sidecar cannot execute code. Anything else is
a reason to train from the first epoch, returned for the caller to say.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from kernelfit.sidecar import read_with_sidecar, write_with_sidecar

# What a checkpoint holds besides the state dicts, with the types resuming needs.
_PLAIN = {"history": list, "steps": int, "epoch": int}


def sidecar_path(path) -> Path:
    """``NAME.ckpt.json`` beside ``NAME.ckpt``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_checkpoint(torch, path, key: dict, model, optimizer, *, history: list, steps: int,
                    epoch: int) -> Path:
    """Write the checkpoint of ``epoch`` (whole or not at all), keyed by ``key``."""
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "history": history, "steps": steps, "epoch": epoch}, buf)
    return write_with_sidecar(path, buf.getvalue(), sidecar_path(path),
                              {"key": key, "epoch": epoch})


def load_checkpoint(torch, path, key: dict) -> tuple[dict | None, str | None]:
    """(state, None) for a sound checkpoint of the run ``key``; else (None, why not).

    ``why`` is None when there is simply no checkpoint.
    """
    path = Path(path)
    if not path.exists():
        return None, None
    blob, meta, problem = read_with_sidecar(path, sidecar_path(path))
    if blob is None:
        return None, (f"fails its integrity check ({problem})" if problem else
                      "has no sidecar (a killed write, or not written by kernelfit)")
    if meta.get("key") != key:
        return None, "was made by another run (settings, data or kernelfit version differ)"
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return None, f"cannot be read as tensors and plain values ({first})"
    if not isinstance(state, dict) or not all(
            isinstance(state.get(k), t) for k, t in _PLAIN.items()) or not all(
            isinstance(state.get(k), dict) for k in ("model", "optimizer")):
        return None, "does not hold a model, an optimizer, a history and its counts"
    return state, None


def remove_checkpoint(path) -> None:
    """Remove the checkpoint and its sidecar (the run is finished)."""
    path = Path(path)
    sidecar_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)

"""A resumable store of results: one JSON file per point, keyed by what made the result.

Every experiment (Table 3, sweeps, SGD runs, comparisons) writes its points
here. A point is reused only when it was made by this kernelfit version from
the same data (:func:`with_data`: the data's fingerprint) with the same
settings that change its numbers, and its record still matches the checksum
written with it; otherwise it is recomputed, with a line saying why. Display
and resource options (progress bars, memory cap, threads, cache locations)
are not part of the key, so rerunning with ``--quiet`` or on another machine
reuses finished points.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
from pathlib import Path

from kernelfit import __version__
from kernelfit.atomic import write_json_atomic
from kernelfit.engine.kernels import NETWORK_KERNELS
from kernelfit.formats import jsonable

#: The run settings only the network kernels read
#: (:data:`kernelfit.engine.kernels.NETWORK_KERNELS`).
NETWORK_SETTINGS = ("depth", "weight_std", "bias_std")
# Options and config fields that change how a run looks or where it reads from,
# never its numbers.
NOT_RESULT_SETTINGS = frozenset({"progress", "memory_limit", "n_jobs", "data_home",
                                 "feature_cache", "quiet", "strict", "keep_scratch"})
#: The settings entry holding the data's fingerprint (see :func:`with_data`).
DATA_KEY = "data_fingerprint"
#: The settings entry holding the kernelfit version that made a record (added by the store).
VERSION_KEY = "kernelfit"
#: The record entry holding the sha256 of the rest of the record.
CHECKSUM_KEY = "checksum"


def result_settings(obj) -> dict:
    """The JSON-able settings of ``obj`` (a dataclass or dict) that change its result.

    Nested dataclasses (a RunConfig's ``options``) are flattened the same way.
    """
    d = asdict(obj) if is_dataclass(obj) else dict(obj)
    if "kernel" in d and d["kernel"] not in NETWORK_KERNELS:
        # only nngp / ntk read these: other kernels' records keep the keys they had before
        d = {k: v for k, v in d.items() if k not in NETWORK_SETTINGS}
    return json.loads(json.dumps(_drop(d), sort_keys=True, default=str))


def _drop(d):
    if isinstance(d, dict):
        return {k: _drop(v) for k, v in d.items() if k not in NOT_RESULT_SETTINGS}
    return d


def with_data(settings: dict, dataset: str, data_home=None) -> dict:
    """``settings`` keyed also by the fingerprint of the data ``dataset`` reads.

    See :func:`kernelfit.data.fingerprint.data_fingerprint` (``data_home``
    is where the dataset is cached; fetched first if it is not).
    """
    from kernelfit.data.fingerprint import data_fingerprint

    return {**settings, DATA_KEY: data_fingerprint(dataset, data_home)}


def settings_key(settings: dict, length: int = 12) -> str:
    """A short stable hash of settings, for file names of points.

    The data's fingerprint is left out: a point made from other data keeps its
    name, so the store finds it, says why it is stale and replaces it.
    """
    named = {k: v for k, v in settings.items() if k != DATA_KEY}
    text = json.dumps(named, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def record_checksum(record: dict) -> str:
    """sha256 of ``record`` as canonical JSON (sorted keys, as the store writes its values)."""
    text = json.dumps(jsonable(record), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _short(fingerprint) -> str:
    return f"{fingerprint[:12]}..." if isinstance(fingerprint, str) else "none recorded"


def stale_reason(saved, key: dict) -> str | None:
    """Why the stored record ``saved`` is not the result of ``key`` (None: it is).

    Checked in order: the record's own checksum, the kernelfit version, the
    data's fingerprint, then the other settings.
    """
    if not isinstance(saved, dict):
        return "fails its integrity check (not a JSON record: truncated or damaged)"
    body = {k: v for k, v in saved.items() if k != CHECKSUM_KEY}
    if CHECKSUM_KEY not in saved:
        return "fails its integrity check (no checksum: written by an older kernelfit or by hand)"
    if saved[CHECKSUM_KEY] != record_checksum(body):
        return "fails its integrity check (its content does not match its checksum: edited " \
               "or damaged)"
    old = body.get("settings")
    if not isinstance(old, dict):
        return "fails its integrity check (no settings)"
    if old.get(VERSION_KEY) != key.get(VERSION_KEY):
        return f"was made by kernelfit {old.get(VERSION_KEY, '(unknown version)')}, " \
               f"this is {key.get(VERSION_KEY)}"
    if old.get(DATA_KEY) != key.get(DATA_KEY):
        return (f"was made from other data (fingerprint {_short(old.get(DATA_KEY))}, "
                f"the data now {_short(key.get(DATA_KEY))})")
    if old != key:
        changed = sorted(k for k in old.keys() | key.keys() if old.get(k) != key.get(k))
        return f"was made with other settings ({', '.join(changed)})"
    return None


class ResultStore:
    """JSON files ``DIR/NAME.json``, each ``{"settings": ..., **payload, "checksum": ...}``.

    The stored settings are the caller's plus the kernelfit version
    (:data:`VERSION_KEY`); the checksum covers everything else in the file.
    """

    def __init__(self, directory):
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    @staticmethod
    def key(settings: dict) -> dict:
        """What a record is keyed by: ``settings`` and the kernelfit version."""
        return {**settings, VERSION_KEY: __version__}

    def check(self, name: str, settings: dict) -> tuple[dict | None, str | None]:
        """(record, None) when ``name`` holds the result of ``settings``; (None, why) when
        it holds something else; (None, None) when there is no record."""
        path = self.path(name)
        if not path.exists():
            return None, None
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = None
        why = stale_reason(saved, self.key(settings))
        if why is not None:
            return None, why
        return {k: v for k, v in saved.items() if k != CHECKSUM_KEY}, None

    def load(self, name: str, settings: dict, *, log=None, label: str | None = None) -> dict | None:
        """The saved result of ``name`` if it was made with exactly ``settings``, else None.

        A record that exists but cannot be reused (see :func:`stale_reason`)
        is reported to ``log`` as ``LABEL: record WHY; recomputing`` (``label``
        defaults to ``name``): the caller computes it again.
        """
        saved, why = self.check(name, settings)
        if why is not None and log is not None:
            log(f"{label or name}: record {why}; recomputing")
        return saved

    def save(self, name: str, settings: dict, payload: dict) -> Path:
        """Write the point (keyed by :meth:`key`, checksummed) whole or not at all."""
        if {"settings", CHECKSUM_KEY} & payload.keys():
            raise ValueError("a payload cannot hold 'settings' or 'checksum' (the store's own)")
        record = jsonable({"settings": self.key(settings), **payload})
        return write_json_atomic(self.path(name), {**record,
                                                   CHECKSUM_KEY: record_checksum(record)})

    def load_or_compute(self, name: str, settings: dict, compute, *, log=print,
                        progress: bool = True) -> dict:
        """The saved point ``name`` if it was made with ``settings``; else ``compute()``'s
        payload, saved first. The result also carries ``name`` and ``reused``.

        ``log`` receives "reusing" / "running" lines (only with ``progress``)
        and, always, the line saying why a stored record is recomputed.
        """
        saved, why = self.check(name, settings)
        reused = saved is not None
        if why is not None:
            log(f"{name}: record {why}; recomputing")
        elif progress:
            log(f"{name}: reusing {self.path(name)}" if reused else f"{name}: running")
        if not reused:
            self.save(name, settings, compute())
            saved = self.load(name, settings)
        return {**saved, "name": name, "reused": reused}

    def all(self) -> list[dict]:
        """Every sound record in the directory (checksum intact), in name order."""
        out = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(saved, dict) and isinstance(saved.get("settings"), dict) \
                    and stale_reason(saved, saved["settings"]) is None:
                out.append({k: v for k, v in saved.items() if k != CHECKSUM_KEY})
        return out

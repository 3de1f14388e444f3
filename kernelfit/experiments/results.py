"""A resumable store of results: one JSON file per point, keyed by what changes the result.

Every experiment (Table 3, sweeps, SGD runs, comparisons) writes its points
here. A point is rerun only when the settings that change its result differ
from the saved ones; display and resource options (progress bars, memory cap,
threads, cache locations) are not part of the key, so rerunning with
``--quiet`` or on another machine reuses finished points.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
from pathlib import Path

from ..atomic import write_json_atomic

# Options and config fields that change how a run looks or where it reads from,
# never its numbers.
NOT_RESULT_SETTINGS = frozenset({"progress", "memory_limit", "n_jobs", "data_home",
                                 "feature_cache", "quiet", "strict"})


def result_settings(obj) -> dict:
    """The JSON-able settings of ``obj`` (a dataclass or dict) that change its result.

    Nested dataclasses (a RunConfig's ``options``) are flattened the same way.
    """
    d = asdict(obj) if is_dataclass(obj) else dict(obj)
    return json.loads(json.dumps(_drop(d), sort_keys=True, default=str))


def _drop(d):
    if isinstance(d, dict):
        return {k: _drop(v) for k, v in d.items() if k not in NOT_RESULT_SETTINGS}
    return d


def settings_key(settings: dict, length: int = 12) -> str:
    """A short stable hash of settings, for file names of sweep points."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class ResultStore:
    """JSON files ``DIR/NAME.json``, each ``{"settings": ..., **payload}``."""

    def __init__(self, directory):
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def load(self, name: str, settings: dict) -> dict | None:
        """The saved result of ``name`` if it was made with exactly ``settings``, else None.

        A file that cannot be parsed (not written by us) counts as absent.
        """
        path = self.path(name)
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return saved if isinstance(saved, dict) and saved.get("settings") == settings else None

    def save(self, name: str, settings: dict, payload: dict) -> Path:
        """Write the point whole or not at all."""
        return write_json_atomic(self.path(name), {"settings": settings, **payload})

    def load_or_compute(self, name: str, settings: dict, compute, *, log=print) -> dict:
        """The saved point ``name`` if it was made with ``settings``; else ``compute()``'s
        payload, saved first. The result also carries ``name`` and ``reused``."""
        saved = self.load(name, settings)
        reused = saved is not None
        if reused:
            log(f"{name}: reusing {self.path(name)}")
        else:
            log(f"{name}: running")
            self.save(name, settings, compute())
            saved = self.load(name, settings)
        return {**saved, "name": name, "reused": reused}

    def all(self) -> list[dict]:
        """Every saved point in the directory, in name order."""
        out = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(saved, dict) and "settings" in saved:
                out.append(saved)
        return out

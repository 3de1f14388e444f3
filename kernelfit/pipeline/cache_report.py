"""What `kernelfit data list` shows: the data cache's entries, the feature cache's state told by
the feature cache itself (the data layer knows nothing of features)."""

from __future__ import annotations

from kernelfit.data.manage import FEATURES, entries
from kernelfit.features.cache import describe


def cache_entries(data_home=None) -> list[dict]:
    """Every dataset, the feature cache (each matrix checked) and the scratch folder.

    Returns
    -------
    list of dict
        As :func:`kernelfit.data.manage.entries`: ``name``, ``path``, ``bytes``,
        ``files``, ``state``.
    """
    rows = entries(data_home)
    for row in rows:
        if row["name"] == FEATURES and not row["state"].startswith("link to"):
            row["state"] = describe(row["path"])
    return rows

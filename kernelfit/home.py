"""The cache root kernelfit keeps its data, features and scratch tiles under.

A ground-floor module: the data layer keeps its datasets there, the engine its
scratch tiles, the feature cache its matrices, and none of them needs another
to find it.
"""

from __future__ import annotations

import os
from pathlib import Path

from kernelfit.params import folder

#: Folder of the cache root where K's tile files go by default (``Options.scratch_dir``).
SCRATCH = "scratch"


def data_home(data_home=None) -> Path:
    """The cache root: ``data_home``, else ``$KERNELFIT_DATA``, else the user cache dir.

    Parameters
    ----------
    data_home : str or Path, optional
        Explicit root; wins over the environment.

    Returns
    -------
    Path
        ``platformdirs.user_cache_dir() / "kernelfit"`` by default. Not created here.

    Raises
    ------
    InputError
        The root is a file, under ``/proc`` or ``/sys``, or cannot be created
        (checked before anything is read or written there).
    """
    import platformdirs
    default = Path(platformdirs.user_cache_dir()) / "kernelfit"
    if data_home is not None:
        name, root = "--data-home / data_home", data_home
    elif os.environ.get("KERNELFIT_DATA"):
        name, root = "$KERNELFIT_DATA", os.environ["KERNELFIT_DATA"]
    else:
        name, root = "the default cache root", default
    return folder(name, root, example=str(default))

"""Where a command may write: its output paths, checked before any work.

One rule for every command that writes (``--json``, ``--save-model``,
``--out``): an output never replaces what the command reads or what
kernelfit keeps, so no mistyped path can destroy an input.

- An empty path is refused (``--json ""`` names no file).
- Never an input: the dataset's own files (the ``npz:PATH`` file, anything
  inside an ``idx:DIR``) or another file the command reads (the model that
  ``kernelfit predict`` loads).
- Never inside a data cache root (:func:`kernelfit.data.cache.data_home`:
  the one the command uses and the default one), which holds the datasets,
  their manifests, cached features and K's scratch tiles.
- Never two outputs of one command at the same place (``--json X
  --save-model X``: the second would replace the first).

Paths are compared once resolved (``Path.resolve``: symbolic links
followed, ``..`` removed), and a message about a symbolic link names the
link and where it points. Then each output is probed with
:func:`kernelfit.atomic.check_writable` (a directory, a device node, no
permission).
"""

from __future__ import annotations

import os
from pathlib import Path

from kernelfit.atomic import check_writable
from kernelfit.errors import InputError, OutputPathError

# The name probed inside an output directory (never created: check_writable only
# makes and removes a temporary file beside it).
_PROBE = ".kernelfit-write-probe"


def check_outputs(files=None, *, dirs=None, inputs=None, datasets=(), data_home=None) -> None:
    """Refuse, before any work, output paths that are empty, unwritable or would destroy data.

    Parameters
    ----------
    files : dict of str to path or None
        The command's output files by option (``{"--json": args.json}``); None
        entries are not asked for and skipped.
    dirs : dict of str to path or None
        Output directories by option (``{"--out": args.out}``); created if missing.
    inputs : dict of str to path, optional
        Other files the command reads, by what they are (``{"the model": args.model}``).
    datasets : iterable of str
        The datasets the command reads (``"digits"``, ``"npz:PATH"``, ``"idx:DIR"``).
    data_home : path, optional
        The data cache root the command uses (``--data-home``).

    Raises
    ------
    InputError
        An empty path, or two outputs at the same place.
    OutputPathError
        An output that is an input, lies inside a data cache or an ``idx:DIR``,
        or cannot be written (see :func:`~kernelfit.atomic.check_writable`).
    """
    outputs = [(opt, path, "file") for opt, path in (files or {}).items() if path is not None]
    outputs += [(opt, path, "directory") for opt, path in (dirs or {}).items()
                if path is not None]
    for opt, path, kind in outputs:
        if not str(path).strip():
            raise InputError(f"{opt} was given an empty path; give a {kind} name "
                             f"(e.g. {opt} {'result.json' if kind == 'file' else 'results'})")
    protected_files, protected_dirs = _protected(inputs or {}, datasets, data_home)
    seen: dict[Path, str] = {}
    for opt, path, _kind in outputs:
        where = _resolve(path)
        for what, other in protected_files:
            if where == other:
                raise OutputPathError(_named(path), f"it is {what} ({other}), which {opt} would "
                                                    "overwrite; give an output path of its own")
        for what, root in protected_dirs:
            if where == root or root in where.parents:
                raise OutputPathError(_named(path), f"it lies in {what} ({root}), which "
                                                    f"{opt} must not write into; give a path "
                                                    "outside it")
        if where in seen:
            raise InputError(f"{seen[where]} and {opt} both name {_named(path)}, so one would "
                             "replace the other; give each output its own path")
        seen[where] = opt
    for _opt, path, kind in outputs:
        check_writable(path if kind == "file" else Path(path).expanduser() / _PROBE)


def _resolve(path) -> Path:
    return Path(path).expanduser().resolve()


def _named(path) -> str:
    """``path`` as given, with where it really leads when a symbolic link is on the way."""
    given = Path(path).expanduser()
    where = _resolve(path)
    if given.is_symlink():
        return f"{path} (a symbolic link to {os.readlink(given)}, i.e. {where})"
    if Path(os.path.abspath(given)) != where:
        return f"{path} (which leads to {where} through a symbolic link)"
    return str(path)


def _protected(inputs: dict, datasets, data_home) -> tuple[list, list]:
    """(what, resolved path) of the files and of the directories no output may touch."""
    from kernelfit.data import user
    from kernelfit.data.cache import data_home as cache_root

    files = [(f"the input {what}", _resolve(p)) for what, p in inputs.items() if p]
    dirs = []
    for name in datasets:
        if user.is_user(name):
            kind, path = user._parse(name)      # resolved, as the loader reads it
            if kind == "npz":
                files.append((f"the input data of --dataset {name}", path))
            else:
                dirs.append((f"the input data directory of --dataset {name}", path))
    for root in {_resolve(cache_root(data_home)), _resolve(cache_root())}:
        dirs.append(("kernelfit's data cache", root))
    return files, dirs

"""The import-linter contracts of pyproject.toml, checked on the layout as installed.

An editable install maps ``kernelfit.features`` and ``kernelfit.cli`` to the
top-level ``features/`` and ``cli/`` folders, which import-linter (walking
``kernelfit/`` on disk) would not see. The test stages the installed layout
(``kernelfit/`` with ``features/`` and ``cli/`` inside) in a temporary folder
and runs ``lint-imports`` on it, so CI fails on any layer violation or cycle.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold(tmp_path):
    lint = shutil.which("lint-imports", path=os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if lint is None:
        pytest.fail("lint-imports is missing: pip install -e '.[test]' installs import-linter")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    staged = tmp_path / "kernelfit"
    shutil.copytree(ROOT / "kernelfit", staged, ignore=ignore)
    shutil.copytree(ROOT / "features", staged / "features", ignore=ignore)
    shutil.copytree(ROOT / "cli", staged / "cli", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([lint, "--no-cache"], cwd=tmp_path, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    # the contracts ran against the staged copy, not an installed kernelfit
    assert "Contracts: 5 kept, 0 broken." in out.stdout, out.stdout[-3000:]


def test_the_contracts_cover_every_package_of_kernelfit():
    """Every subpackage and top-level module of kernelfit sits in the layers contract."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c.get("containers") is None
                  and c["type"] == "layers")["layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    present = {f"kernelfit.{p.stem}" for p in (ROOT / "kernelfit").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__")
               or (p.is_dir() and (p / "__init__.py").exists())}
    present |= {"kernelfit.features", "kernelfit.cli"}
    assert present == named, (f"not in the layers: {sorted(present - named)}; "
                              f"gone: {sorted(named - present)}")

"""`pip install .` (not editable) ships every package: the README's first command uses it."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")     # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _declared():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(config["packages"]), config["package-dir"]


def test_every_package_directory_is_declared():
    packages, package_dir = _declared()
    found = set()
    for name, where in package_dir.items():
        base = ROOT / where
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join((name, *rel.parts)) if rel.parts else name)
    missing = sorted(found - packages)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"


def test_every_declared_package_exists():
    packages, package_dir = _declared()
    for pkg in packages:
        head = max((n for n in package_dir if pkg == n or pkg.startswith(n + ".")), key=len)
        path = ROOT / package_dir[head] / Path(*pkg[len(head):].lstrip(".").split(".") or [])
        assert (path / "__init__.py").is_file(), pkg

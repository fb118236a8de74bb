"""pyproject lists every folder that ships files, so `pip install .` installs them all without
setuptools' warning about importable folders that are not packages."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("*.py", "*.yaml", "*.xml", "*.png")


def test_every_folder_with_files_is_a_listed_package():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    folders = set()
    for package, folder in setup["package-dir"].items():
        for path in (ROOT / folder).rglob("*"):
            ships = path.is_dir() and any(next(path.glob(g), None) for g in SHIPPED)
            if ships and "__pycache__" not in path.parts:
                folders.add(".".join((package, *path.relative_to(ROOT / folder).parts)))
        folders.add(package)
    assert folders == listed, (sorted(folders - listed), sorted(listed - folders))
    shipped = {p for patterns in setup["package-data"].values() for p in patterns}
    assert {"*.yaml", "*.xml", "*.png"} <= shipped

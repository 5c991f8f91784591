"""Fixtures that run the Kedro project itself, in scratch copies of its configuration."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _scratch_project(root: Path) -> Path:
    """Lay out a runnable project at ``root``: the repo's ``conf/`` and ``pyproject.toml``,
    a copy of ``src`` (Kedro wants it inside the project) and an empty ``data/``.

    Runs happen with ``root`` as the working directory, so every relative path in the
    catalog (data/, the sqlite MLflow store) lands inside it, never in the repository.
    """
    shutil.copytree(REPO_ROOT / "conf", root / "conf")
    shutil.copy(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(REPO_ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data").mkdir()
    return root


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch project shared by the tests of one module."""
    return _scratch_project(tmp_path_factory.mktemp("project"))


@pytest.fixture
def fresh_project(tmp_path: Path) -> Path:
    """A scratch project of the test's own."""
    return _scratch_project(tmp_path / "project")

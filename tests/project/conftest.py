"""Fixtures that run the Kedro project itself, in scratch copies of its configuration."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from kedro.framework.project import configure_project
from kedro.framework.session import KedroSession

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def named_pipelines() -> set[str]:
    """The project's named pipelines (``__default__`` runs them all)."""
    return {
        "ingestion",
        "backbone",
        "validation",
        "extraction",
        "importance",
        "mapping",
        "transfer",
        "explanation",
        "export",
        "predict",
    }


def _scratch_project(root: Path) -> Path:
    """Lay out a runnable project at ``root``: the repo's ``conf/`` and ``pyproject.toml``,
    a copy of ``src`` (Kedro wants it inside the project) and an empty ``data/``.

    Runs happen with ``root`` as the working directory, so every relative path in the
    catalog (data/, the sqlite MLflow store) lands inside it, never in the repository.
    """
    shutil.copytree(REPO_ROOT / "conf", root / "conf")
    # An absolute store: MLflow caches one database engine per URI for the whole process.
    mlflow_yml = root / "conf" / "base" / "mlflow.yml"
    mlflow_yml.write_text(
        mlflow_yml.read_text().replace("sqlite:///mlflow.db", f"sqlite:///{root}/mlflow.db")
    )
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


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``kedro run --env=test`` once for the session in a scratch project (with a copy of
    the notebook)."""
    root = _scratch_project(tmp_path_factory.mktemp("finished"))
    shutil.copytree(REPO_ROOT / "notebooks", root / "notebooks")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        configure_project("niwt_pipeline")
        with KedroSession.create(project_path=root, env="test") as session:
            session.run()
    finally:
        os.chdir(cwd)
    return root

"""Shared fixtures: the real-data folder and torch threading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    os.environ.get("NIWT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")
).resolve()


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"real data not found at {path}: place the CUB/AWA2/xlsa17 metadata under "
            f"{SHARED_DATA} (or set NIWT_SHARED_DATA) to run this test"
        )
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder with real CUB/AWA2/xlsa17 files; skips the test where it is absent."""
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def cub_root(shared_data: Path) -> Path:
    """``.../CUB`` holding ``CUB_200_2011/`` and ``attributes.txt``."""
    return _require(shared_data / "CUB")


@pytest.fixture(scope="session")
def awa2_root(shared_data: Path) -> Path:
    """``.../AWA2`` holding ``Animals_with_Attributes2/``."""
    return _require(shared_data / "AWA2")


@pytest.fixture(scope="session")
def xlsa17_root(shared_data: Path) -> Path:
    """``.../xlsa17/data`` holding ``CUB/`` and ``AWA2/`` split folders."""
    return _require(shared_data / "xlsa17" / "data")


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """One torch thread: on a busy 2-core machine this is several times faster than two."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield

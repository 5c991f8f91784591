"""Replacing outputs: a symbolic link keeps pointing at the new content, permissions follow
the umask, and a failed write leaves the old output as it was."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from niwt_pipeline.core.data.atomic import replaced_atomically, swap_into_place


def _staged(parent: Path, text: str) -> Path:
    staging = Path(tempfile.mkdtemp(dir=parent, suffix=".new"))  # created 0700, like outputs
    (staging / "sub").mkdir()
    fd, file = tempfile.mkstemp(dir=staging / "sub")  # created 0600
    os.close(fd)
    Path(file).write_text(text)
    return staging


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_symlinked_output_folder_is_replaced_behind_its_link(tmp_path, umask_022):
    real = tmp_path / "elsewhere" / "export"
    real.mkdir(parents=True)
    (real / "old.txt").write_text("old")
    link = tmp_path / "out" / "export"
    link.parent.mkdir()
    link.symlink_to(real, target_is_directory=True)
    swap_into_place(_staged(link.parent, "new"), link)
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert [p.name for p in real.iterdir()] == ["sub"]
    assert next((real / "sub").iterdir()).read_text() == "new"
    assert sorted(p.name for p in link.parent.iterdir()) == ["export"]  # nothing left aside
    assert sorted(p.name for p in real.parent.iterdir()) == ["export"]


def test_replaced_folders_and_files_get_the_umask_s_permissions(tmp_path, umask_022):
    root = tmp_path / "export"
    swap_into_place(_staged(tmp_path, "x"), root)
    assert _mode(root) == 0o755 and _mode(root / "sub") == 0o755
    assert _mode(next((root / "sub").iterdir())) == 0o644


def test_a_file_is_replaced_in_one_rename_or_not_at_all(tmp_path, umask_022):
    path = tmp_path / "table.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), replaced_atomically(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed while writing")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "table.json"
    ]
    with replaced_atomically(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and _mode(path) == 0o644

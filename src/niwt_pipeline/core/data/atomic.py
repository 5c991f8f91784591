"""Replacing a whole output folder so that a failure never leaves a half-written one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def swap_into_place(new: Path, root: Path) -> None:
    """Rename the finished folder ``new`` to ``root``, with the permissions the user's
    umask gives new files and folders (temporary folders and files are created private).

    An existing ``root`` is moved aside first and removed only once ``new`` is in place;
    if the rename fails, the old ``root`` is put back. When ``root`` is a symbolic link to
    a folder, the folder it points to is replaced and the link is kept.

    Raises:
        OSError: if moving ``root`` aside or renaming ``new`` fails (in the latter case
            after the old ``root`` has been put back); any exception raised during the
            rename is re-raised likewise.
    """
    _apply_default_modes(new)
    if root.is_symlink():
        target = root.resolve()
        if target.parent != new.parent:  # possibly another file system: move beside it
            moved = target.parent / f".{target.name}.{uuid.uuid4().hex}.new"
            shutil.move(str(new), str(moved))
            new = moved
        root = target
    if not root.exists():
        new.rename(root)
        return
    old = root.parent / f".{root.name}.{uuid.uuid4().hex}.old"
    root.rename(old)
    try:
        new.rename(root)
    except BaseException:
        old.rename(root)
        raise
    shutil.rmtree(old)


def _apply_default_modes(folder: Path) -> None:
    """Give ``folder`` and everything in it the umask's default permissions."""
    folder.chmod(default_mode(directory=True))
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod(default_mode(directory=path.is_dir()))


def default_mode(directory: bool = False) -> int:
    """The permissions a new file (``0o666``) or folder (``0o777``) gets under the current
    umask, for outputs first written as temporary files (which are created ``0o600`` and
    ``0o700``)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; when the block succeeds it replaces
    ``path`` in one rename, with the umask's default permissions; when it fails it is
    removed and ``path`` is left as it was.

    Raises:
        OSError: if the temporary file cannot be created or renamed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def replaced_folder(root: Path) -> Iterator[Path]:
    """A temporary sibling folder of ``root`` to fill; when the block succeeds it replaces
    ``root`` (:func:`swap_into_place`); when it fails it is removed and ``root`` is left
    as it was.

    Raises:
        OSError: if the temporary folder cannot be created or swapped into place.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".new"))
    try:
        yield staging
        swap_into_place(staging, root)
    finally:
        if staging.exists():
            shutil.rmtree(staging)

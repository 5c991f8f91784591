"""Replacing a whole output folder so that a failure never leaves a half-written one."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def swap_into_place(new: Path, root: Path) -> None:
    """Rename the finished folder ``new`` to ``root``.

    An existing ``root`` is moved aside first and removed only once ``new`` is in place;
    if the rename fails, the old ``root`` is put back.

    Raises:
        OSError: if moving ``root`` aside or renaming ``new`` fails (in the latter case
            after the old ``root`` has been put back); any exception raised during the
            rename is re-raised likewise.
    """
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


def default_mode(directory: bool = False) -> int:
    """The permissions a new file (``0o666``) or folder (``0o777``) gets under the current
    umask, for outputs first written as temporary files (which are created ``0o600`` and
    ``0o700``)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask

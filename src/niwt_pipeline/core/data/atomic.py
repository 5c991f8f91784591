"""Replacing a whole output folder so that a failure never leaves a half-written one."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path


def swap_into_place(new: Path, root: Path) -> None:
    """Rename the finished folder ``new`` to ``root``.

    An existing ``root`` is moved aside first and removed only once ``new`` is in place;
    if the rename fails, the old ``root`` is put back.
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

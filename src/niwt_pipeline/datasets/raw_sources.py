"""Catalog datasets that read a whole dataset layout into a :class:`RawDataset`.

Each one is read-only except :class:`AttributeWorldDataset`, which generates the embedded
default world into the project's own layout on first load (and again whenever its
configuration changes), then reads it back through the same reader as a user's own data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from niwt_pipeline.core.data.tables import RawDataset

logger = logging.getLogger(__name__)


class _ReadOnlyLayout(AbstractDataset[None, RawDataset]):
    """Base for read-only layout datasets: ``path`` plus reader keyword arguments."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None, **options: Any):
        self._path = Path(path)
        self._options = options
        self.metadata = metadata

    def _read(self) -> RawDataset:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self) -> RawDataset:
        """The layout read by the subclass's reader into a :class:`RawDataset`.

        Raises:
            DatasetError: if ``path`` does not exist, or (wrapping the reader's
                ``InputError``) a file of the layout is missing or malformed.
        """
        if not self._path.exists():
            raise DatasetError(f"{self._path}: dataset folder not found")
        return self._read()

    def save(self, data: None) -> None:
        """Always refused: the layout is read-only.

        Raises:
            DatasetError: always.
        """
        raise DatasetError(f"{type(self).__name__} at {self._path} is read-only")

    def _exists(self) -> bool:
        return self._path.exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), **self._options}


class CUBDataset(_ReadOnlyLayout):
    """CUB-200-2011 in its official layout with the xlsa17 proposed split.

    Example::

        raw_source:
          type: niwt_pipeline.datasets.CUBDataset
          path: /data/CUB                      # holds CUB_200_2011/ and attributes.txt
          splits_file: /data/xlsa17/data/CUB/att_splits.mat
    """

    def _read(self) -> RawDataset:
        from niwt_pipeline.core.data.cub import read_cub

        return read_cub(self._path, **self._options)


class AWA2Dataset(_ReadOnlyLayout):
    """Animals with Attributes 2 in its official layout with the xlsa17 proposed split."""

    def _read(self) -> RawDataset:
        from niwt_pipeline.core.data.awa2 import read_awa2

        return read_awa2(self._path, **self._options)


class OwnLayoutDataset(_ReadOnlyLayout):
    """A user's own data in the project's documented layout (see the README)."""

    def _read(self) -> RawDataset:
        from niwt_pipeline.core.data.own import read_own_layout

        return read_own_layout(self._path, **self._options)


class AttributeWorldDataset(AbstractDataset[None, RawDataset]):
    """The generated attribute world, materialised at ``path`` in the own-data layout.

    ``world`` holds the generator's configuration (sizes, seed; see ``WorldConfig``).  The
    folder records the configuration it was generated with; a missing folder, or one made
    with another configuration, is (re)generated atomically before it is read.
    """

    def __init__(
        self,
        *,
        path: str,
        world: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = Path(path)
        self._world = dict(world or {})
        self.metadata = metadata

    def _config(self) -> Any:
        from niwt_pipeline.core.data.world import WorldConfig

        return WorldConfig(**self._world)

    def _is_current(self, config: Any) -> bool:
        from dataclasses import asdict

        manifest = self._path / "world.json"
        if not manifest.is_file():
            return False
        try:
            recorded = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            return False
        return recorded.get("config") == json.loads(json.dumps(asdict(config)))

    def load(self) -> RawDataset:
        """The world read as an own-data layout, (re)generated first when missing or stale.

        Kedro wraps any failure (an ``InputError`` from a bad ``world`` configuration, an
        ``OSError`` while writing) in a ``DatasetError``.
        """
        from niwt_pipeline.core.data.own import read_own_layout
        from niwt_pipeline.core.data.world import generate_world, write_world

        config = self._config()
        if not self._is_current(config):
            logger.info("generating the attribute world at %s (%s)", self._path, config)
            write_world(generate_world(config), self._path)
        return read_own_layout(self._path)

    def save(self, data: None) -> None:
        """Always refused: the world is generated on load.

        Raises:
            DatasetError: always.
        """
        raise DatasetError("the attribute world is generated on load; it cannot be saved to")

    def _exists(self) -> bool:
        # Always loadable: a missing world is generated on load.
        return True

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "world": self._world}

"""Classes defined by their description alone, as one catalog entry (a CSV file)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from niwt_pipeline.core.extra import ExtraClasses, read_extra_classes


class ExtraClassesDataset(AbstractDataset[None, ExtraClasses]):
    """An extra-classes CSV (``class_name,<dim>,...`` or ``class_name,text``; see
    :mod:`niwt_pipeline.core.extra`), read-only. A missing file means no extra classes, so
    the entry can stay in the catalog of every environment.

    Example catalog entry::

        extra_classes:
          type: niwt_pipeline.datasets.ExtraClassesDataset
          filepath: data/01_raw/extra_classes.csv
    """

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> ExtraClasses:
        """The classes in the file (none when it does not exist).

        Raises:
            InputError: naming the file and line of a malformed row.
        """
        return read_extra_classes(str(self._filepath))

    def save(self, data: None) -> None:
        """Refused: the file is written by people, not by a pipeline.

        Raises:
            DatasetError: always.
        """
        raise DatasetError(f"{self._filepath}: extra classes are an input, not saved by a node")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

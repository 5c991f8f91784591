"""A folder in the xlsa17 layout (features, splits, domain knowledge, seen classifier)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from niwt_pipeline.core.data.export import (
    FEATURES_FILE,
    LEGACY_FEATURES_FILE,
    export_xlsa17,
    read_xlsa17_export,
)


class Xlsa17ExportDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """The folder :func:`~niwt_pipeline.core.data.export.export_xlsa17` writes, atomically.

    ``save`` takes that function's keyword arguments as a dict; ``load`` returns the same
    dict read back (images in sorted relative-path order, class ids 0-based).

    Example catalog entry::

        xlsa17_export:
          type: niwt_pipeline.datasets.Xlsa17ExportDataset
          path: data/07_model_output/xlsa17
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = PurePosixPath(path)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        """The export read back as a dict of arrays (``export_xlsa17``'s keyword arguments).

        Raises:
            DatasetError: if the folder holds no features file, or (wrapping the
                ``InputError`` of :func:`read_xlsa17_export`) a file is missing or malformed.
        """
        path = Path(self._path)
        if not self._exists():
            raise DatasetError(f"{path}: no xlsa17 export (run the export pipeline first)")
        return read_xlsa17_export(path).as_arrays()

    def save(self, data: dict[str, Any]) -> None:
        """Write the folder with ``export_xlsa17(path, **data)``; Kedro wraps its errors
        (e.g. ``ValueError`` on inconsistent shapes) in a ``DatasetError``."""
        export_xlsa17(Path(self._path), **data)

    def _exists(self) -> bool:
        path = Path(self._path)
        return (path / FEATURES_FILE).is_file() or (path / LEGACY_FEATURES_FILE).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

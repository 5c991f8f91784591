"""The frozen trunk's stored activations as one catalog entry: the manifest written beside
their shard files."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from niwt_pipeline.core.data.atomic import replaced_atomically
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.shards import ShardStore
from niwt_pipeline.core.trunk import TrunkActivations

MANIFEST_FILE = "manifest.json"


class TrunkActivationsDataset(AbstractDataset[TrunkActivations, TrunkActivations]):
    """:class:`~niwt_pipeline.core.trunk.TrunkActivations` in a folder: ``manifest.json``
    (fingerprint, views, shape, the (image, view) of every row, the shards) beside the
    shard files that the ``trunk_activation_shards`` entry (a
    :class:`~niwt_pipeline.datasets.ShardStoreDataset` on the same folder) writes.

    ``load`` checks every shard's fingerprint against the manifest (headers only) and
    returns the object, which reads rows on demand from the memory-mapped files; ``save``
    writes the manifest atomically, after every shard is stored.  In whole-network mode
    the manifest only says so.

    Example catalog entry::

        trunk_activations:
          type: niwt_pipeline.datasets.TrunkActivationsDataset
          path: data/04_feature/trunk_activations
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = PurePosixPath(path)
        self.metadata = metadata

    def load(self) -> TrunkActivations:
        """The stored activations (nothing is read beyond the manifest and shard headers).

        Raises:
            DatasetError: no manifest, a manifest that is not JSON, or shard files missing
                or rewritten since it was written.
        """
        root = Path(self._path)
        manifest = root / MANIFEST_FILE
        if not manifest.is_file():
            raise DatasetError(f"{root}: no trunk activations (run the backbone pipeline)")
        try:
            values = json.loads(manifest.read_text(encoding="utf-8"))
            trunk = TrunkActivations(ShardStore(root), values)
            if trunk.available:
                trunk.check_files()
        except (json.JSONDecodeError, InputError) as exc:
            raise DatasetError(f"{manifest}: {exc}") from None
        return trunk

    def save(self, data: TrunkActivations) -> None:
        """Write the manifest (atomically); the shard files are already in place."""
        root = Path(self._path)
        root.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(root / MANIFEST_FILE) as tmp:
            Path(tmp).write_text(json.dumps(data.manifest), encoding="utf-8")

    def _exists(self) -> bool:
        return (Path(self._path) / MANIFEST_FILE).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

"""A folder of resumable extraction shards, handed to the node as a store object."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from niwt_pipeline.core.shards import ShardStore


class ShardStoreDataset(AbstractDataset[Any, ShardStore]):
    """A folder of resumable shards, loaded as a :class:`~niwt_pipeline.core.shards.ShardStore`.

    Why a store object and not a plain ``PartitionedDataset``: resuming needs, *during* the
    node, to know which shards are already stored with the current fingerprint, to write
    each new shard as soon as it is computed (so a kill loses at most one shard), and to
    read them back one at a time for the merge.  A ``PartitionedDataset`` given as input
    does not exist before its first partition (the run would be refused as lacking an
    upstream output), and one given as output is written only after the node returns; a
    second entry for the same folder would split the lineage.  So the catalog entry is one
    input of the extraction node, whose ``load`` opens the folder (nothing is read yet) and
    returns the store; the library's ``run_shards``/``merge_shards`` skip, write atomically
    and merge through it, and the node returns the merged ``image_outputs`` as before.

    Always "exists" (an empty or missing folder is a store with no shards yet, created on
    the first write).  ``save`` is refused: shards are written through the store.  Each file
    is a plain safetensors file with its fingerprint in the metadata, in the format of
    :class:`~niwt_pipeline.datasets.SafetensorsDataset`, so the folder also loads as a
    ``partitions.PartitionedDataset`` of those (``filename_suffix: .safetensors``).

    Example catalog entry::

        image_output_shards:
          type: niwt_pipeline.datasets.ShardStoreDataset
          path: data/04_feature/image_output_shards
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = PurePosixPath(path)
        self.metadata = metadata

    def load(self) -> ShardStore:
        """A :class:`ShardStore` on the folder; nothing is read yet."""
        return ShardStore(Path(self._path))

    def save(self, data: Any) -> None:
        """Always refused: shards are written one by one through the store.

        Raises:
            DatasetError: always.
        """
        raise DatasetError(
            f"{self._path}: shards are written one by one through the store that load returns"
        )

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

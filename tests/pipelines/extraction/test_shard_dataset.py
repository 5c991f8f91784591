"""ShardStoreDataset: the catalog entry that hands the extraction node its shard store."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from kedro.io import DatasetError
from kedro_datasets.partitions import PartitionedDataset

from niwt_pipeline.core.shards import ShardStore, plan_shards
from niwt_pipeline.datasets import ShardStoreDataset


class TestShardStoreDataset:
    def test_load_opens_the_folder_without_creating_it(self, tmp_path):
        dataset = ShardStoreDataset(path=str(tmp_path / "shards"))

        store = dataset.load()

        assert isinstance(store, ShardStore)
        assert store.root == tmp_path / "shards"
        assert store.names() == []
        assert not (tmp_path / "shards").exists()

    def test_exists_even_before_the_first_shard(self, tmp_path):
        assert ShardStoreDataset(path=str(tmp_path / "shards")).exists()

    def test_save_is_refused(self, tmp_path):
        with pytest.raises(DatasetError, match="written one by one"):
            ShardStoreDataset(path=str(tmp_path / "shards")).save({"x": torch.zeros(1)})

    def test_describe_names_the_path(self, tmp_path):
        assert str(tmp_path / "shards") in str(ShardStoreDataset(path=str(tmp_path / "shards")))

    def test_the_folder_reads_as_a_partitioned_dataset_of_safetensors(self, tmp_path):
        store = ShardStoreDataset(path=str(tmp_path / "shards")).load()
        shards = plan_shards(pd.DataFrame({"image_id": range(5)}), 2, "ctx")
        for shard in shards:
            store.write(shard, {"image_id": torch.arange(shard.start, shard.stop)})
        (tmp_path / "shards" / ".shard-00009.safetensors.x.tmp").write_bytes(b"")
        partitions = PartitionedDataset(
            path=str(tmp_path / "shards"),
            dataset="niwt_pipeline.datasets.SafetensorsDataset",
            filename_suffix=".safetensors",
        ).load()

        assert sorted(partitions) == ["shard-00000", "shard-00001", "shard-00002"]
        loaded = partitions["shard-00002"]()
        assert loaded["image_id"].tolist() == [4]
        assert loaded["__metadata__"]["fingerprint"] == shards[2].fingerprint

"""The extraction pipeline run by SequentialRunner on an in-memory catalog, and on a
temporary catalog of the project's real dataset types (sharded, then resumed)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from niwt_pipeline.core.shards import ShardStore
from niwt_pipeline.core.trunk import TrunkActivations
from niwt_pipeline.datasets import SafetensorsDataset, ShardStoreDataset
from niwt_pipeline.pipelines.extraction.pipeline import create_pipeline

INPUTS = {
    "backbone",
    "images",
    "params:extraction",
    "image_output_shards",
    "trunk_activations",
}
OUTPUTS = {"image_outputs"}


def test_pipeline_contract():
    pipeline = create_pipeline()

    assert pipeline.inputs() == INPUTS
    assert pipeline.outputs() == pipeline.all_outputs() == OUTPUTS
    assert [n.name for n in pipeline.nodes] == ["extract_image_outputs"]


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("extraction") / "image_output_shards"


@pytest.fixture(scope="module")
def outputs(run_pipeline, chain, params_for, shard_root):
    return run_pipeline(
        create_pipeline(),
        {
            "backbone": chain.backbone,
            "images": chain.images,
            "params:extraction": params_for("extraction"),
            "image_output_shards": ShardStore(shard_root),
            "trunk_activations": TrunkActivations.none(),
        },
    )


def test_run_extracts_every_image(outputs, chain):
    image_outputs = outputs["image_outputs"]

    assert set(outputs) == OUTPUTS
    assert image_outputs["image_id"].tolist() == chain.images["image_id"].tolist()
    assert image_outputs.keys() == chain.image_outputs.keys()


def test_run_equals_the_direct_node_call(outputs, chain):
    for name, value in chain.image_outputs.items():
        torch.testing.assert_close(outputs["image_outputs"][name], value, equal_nan=True, msg=name)


def test_unsharded_run_writes_no_shards(outputs, shard_root):
    assert not shard_root.exists()


def test_sharded_run_on_a_file_catalog_resumes_and_equals_the_unsharded_one(
    chain, params_for, tmp_path, caplog, assert_identical
):
    root = tmp_path / "data" / "04_feature"

    def catalog() -> DataCatalog:
        return DataCatalog(
            datasets={
                "backbone": MemoryDataset(chain.backbone, copy_mode="assign"),
                "images": MemoryDataset(chain.images, copy_mode="copy"),
                "params:extraction": MemoryDataset(params_for("extraction", {"shard_size": 32})),
                "image_output_shards": ShardStoreDataset(path=str(root / "image_output_shards")),
                "trunk_activations": MemoryDataset(TrunkActivations.none(), copy_mode="assign"),
                "image_outputs": SafetensorsDataset(
                    filepath=str(root / "image_outputs.safetensors")
                ),
            }
        )

    caplog.set_level(logging.INFO, logger="niwt_pipeline.core.shards")
    SequentialRunner().run(create_pipeline(), catalog())
    first = catalog().load("image_outputs")
    shards = sorted(p.name for p in (root / "image_output_shards").iterdir())
    (root / "image_output_shards" / "shard-00001.safetensors").unlink()  # as if killed there
    caplog.clear()
    SequentialRunner().run(create_pipeline(), catalog())

    assert shards == [f"shard-0000{i}.safetensors" for i in range(3)]
    assert caplog.text.count("skipped (done)") == 2 and caplog.text.count("computed in") == 1
    assert_identical(first, chain.image_outputs, same_order=False)
    assert_identical(catalog().load("image_outputs"), chain.image_outputs, same_order=False)

"""Fixtures: every upstream output of the explanation pipeline, for a tiny generated world.

The upstream pipelines (ingestion .. transfer) run once per session with ``SequentialRunner``
on an in-memory catalog, with the ``test`` environment's parameters; the explanation nodes
and pipeline are then tested on exactly the values the real pipelines produce.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner

REPO_ROOT = Path(__file__).resolve().parents[3]
UPSTREAM = (
    "ingestion",
    "backbone",
    "validation",
    "extraction",
    "importance",
    "mapping",
    "transfer",
)


class _KeptMemoryDataset(MemoryDataset):
    """A memory dataset the runner cannot release, so every output stays readable."""

    def __init__(self) -> None:
        super().__init__(copy_mode="assign")

    def _release(self) -> None:
        pass


def _upstream_pipeline() -> Pipeline:
    from importlib import import_module

    return sum(
        (import_module(f"niwt_pipeline.pipelines.{name}").create_pipeline() for name in UPSTREAM),
        Pipeline([]),
    )


@pytest.fixture(scope="session")
def test_config() -> OmegaConfigLoader:
    """The project's configuration in the ``test`` environment (soft-merged over ``base``)."""
    return OmegaConfigLoader(
        conf_source=str(REPO_ROOT / "conf"),
        base_env="base",
        default_run_env="test",
        merge_strategy={"parameters": "soft", "globals": "soft"},
    )


@pytest.fixture(scope="session")
def test_parameters(test_config) -> dict[str, Any]:
    """The project's parameters in the ``test`` environment."""
    return dict(test_config["parameters"])


@pytest.fixture(scope="session")
def upstream(
    tmp_path_factory: pytest.TempPathFactory, test_config, test_parameters
) -> dict[str, Any]:
    """Every dataset the upstream pipelines produce for the ``test`` environment's world, by
    name (shared by the whole session: tests must not modify them)."""
    from niwt_pipeline.datasets import (
        AttributeWorldDataset,
        ExtraClassesDataset,
        NativeAttributesSource,
        ShardStoreDataset,
    )

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("explanation_world")
    pipeline = _upstream_pipeline()
    catalog = DataCatalog(
        {
            "raw_source": AttributeWorldDataset(
                path=str(root / "world"), world=dict(test_config["globals"]["world"])
            ),
            "domain_knowledge_source": NativeAttributesSource(scale="max"),
            "extra_classes": ExtraClassesDataset(filepath=str(root / "extra_classes.csv")),
            "image_output_shards": ShardStoreDataset(path=str(root / "shards")),
            "trunk_activation_shards": ShardStoreDataset(path=str(root / "trunk")),
            **{name: _KeptMemoryDataset() for name in pipeline.all_outputs()},
        }
    )
    for name, value in typed(test_parameters).items():
        catalog[f"params:{name}"] = value
    SequentialRunner().run(pipeline, catalog)
    return {name: catalog.load(name) for name in pipeline.all_outputs()}


def typed(parameters: dict[str, Any]) -> dict[str, Any]:
    """Every block as Kedro hands it to the nodes: its model where it has one."""
    from niwt_pipeline.params import BLOCKS

    return {
        name: BLOCKS[name].model_validate(value) if name in BLOCKS else value
        for name, value in parameters.items()
    }


@pytest.fixture(scope="session")
def explanation_params(test_parameters) -> Any:
    """``params:explanation`` as the project configures it (the validated model)."""
    return typed(test_parameters)["explanation"]


@pytest.fixture(scope="session")
def typed_parameters(test_parameters) -> dict[str, Any]:
    """Every parameter block of the ``test`` environment, validated (e.g. ``mapping``)."""
    return typed(test_parameters)

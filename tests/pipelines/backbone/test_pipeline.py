"""The backbone pipeline run by SequentialRunner on an in-memory catalog."""

from __future__ import annotations

import pytest
import torch

from niwt_pipeline.core.shards import ShardStore
from niwt_pipeline.pipelines.backbone.pipeline import create_pipeline

INPUTS = {"images", "classes", "params:backbone", "trunk_activation_shards"}
OUTPUTS = {
    "backbone",
    "backbone_roles",
    "backbone_report",
    "backbone_metrics",
    "trunk_activations",
}


def test_pipeline_contract():
    pipeline = create_pipeline()

    assert pipeline.inputs() == INPUTS
    assert pipeline.all_outputs() == OUTPUTS
    # both also read by train_backbone
    assert pipeline.outputs() == OUTPUTS - {"trunk_activations", "backbone_roles"}
    assert {n.name for n in pipeline.nodes} == {
        "assign_backbone_roles",
        "compute_trunk_activations",
        "train_backbone",
    }


@pytest.fixture(scope="module")
def outputs(run_pipeline, chain, params_for, tmp_path_factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # as the RuntimeHook does before a run
        return run_pipeline(
            create_pipeline(),
            {
                "images": chain.images,
                "classes": chain.classes,
                "params:backbone": params_for("backbone"),
                "trunk_activation_shards": ShardStore(tmp_path_factory.mktemp("trunk")),
            },
        )


def test_run_returns_every_output(outputs):
    assert set(outputs) == OUTPUTS


def test_run_trains_a_backbone_that_cuts(outputs, chain):
    backbone = outputs["backbone"]

    assert backbone.spec.seen_class_ids == chain.seen_ids
    assert backbone.cut.classifier.out_features == len(chain.seen_ids)
    assert set(outputs["backbone_roles"]["role"]) == {"train", "holdout"}
    assert outputs["backbone_report"]["n_train_images"] + outputs["backbone_report"][
        "n_holdout_images"
    ] == len(outputs["backbone_roles"])
    assert outputs["backbone_metrics"]["seen_accuracy"]["step"] == 0


def test_run_equals_the_direct_node_call_with_the_same_seeds(outputs, chain):
    assert outputs["backbone"].spec == chain.backbone.spec
    assert outputs["backbone_roles"].equals(chain.backbone_roles)
    for name, value in chain.backbone.state.items():
        assert torch.equal(outputs["backbone"].state[name], value), name

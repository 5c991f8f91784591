"""The validation pipeline run by SequentialRunner on an in-memory catalog."""

from __future__ import annotations

import pytest
import torch

from niwt_pipeline.core.trunk import TrunkActivations
from niwt_pipeline.pipelines.validation.pipeline import create_pipeline

INPUTS = {
    "images",
    "classes",
    "backbone_roles",
    "domain_knowledge",
    "params:validation",
    "params:backbone",
    "params:extraction",
    "params:mapping",
    "params:transfer",
    "trunk_activations",
}
OUTPUTS = {
    "validation_backbone_report",
    "validation_choice",
    "validation_results",
    "validation_metrics",
    "validation_niwt_rows",
}
INTERMEDIATES = {
    "validation_roles",
    "validation_backbone",
    "validation_image_outputs",
    "validation_reference_cache",
}


def test_pipeline_contract():
    pipeline = create_pipeline()

    assert pipeline.inputs() == INPUTS
    assert pipeline.outputs() == OUTPUTS
    assert pipeline.all_outputs() == OUTPUTS | INTERMEDIATES
    test_inputs = {i for node in pipeline.nodes for i in node.inputs}
    assert "gzsl_evaluation" not in test_inputs and "image_outputs" not in test_inputs


@pytest.fixture(scope="module")
def outputs(run_pipeline, chain, params_for):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # as the RuntimeHook seeds a run
        return run_pipeline(
            create_pipeline(),
            {
                "images": chain.images,
                "classes": chain.classes,
                "backbone_roles": chain.backbone_roles,
                "domain_knowledge": chain.domain_knowledge,
                "trunk_activations": TrunkActivations.none(),
                **{
                    f"params:{n}": params_for(n)
                    for n in ("validation", "backbone", "extraction", "mapping", "transfer")
                },
            },
        )


def test_run_equals_the_direct_node_calls(outputs, chain):
    assert outputs["validation_choice"] == chain.validation_choice
    assert outputs["validation_roles"].equals(chain.validation_roles)
    for name, value in chain.validation_backbone.state.items():
        assert torch.equal(outputs["validation_backbone"].state[name], value), name

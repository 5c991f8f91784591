"""The mapping pipeline run by SequentialRunner on an in-memory catalog."""

from __future__ import annotations

import pytest
import torch

from niwt_pipeline.pipelines.mapping.pipeline import create_pipeline

INPUTS = {
    "image_importance",
    "domain_knowledge",
    "classes",
    "validation_choice",
    "params:mapping",
}
OUTPUTS = {
    "mapper_weights",
    "predicted_importance",
    "mapper_report",
    "mapper_metrics",
    "inverse_map_weights",
}


def test_pipeline_contract():
    pipeline = create_pipeline()

    assert pipeline.inputs() == INPUTS
    assert pipeline.outputs() == pipeline.all_outputs() == OUTPUTS
    assert {n.name for n in pipeline.nodes} == {"fit_importance_mapper", "fit_inverse_mapper"}


@pytest.fixture(scope="module")
def outputs(run_pipeline, chain, params_for):
    return run_pipeline(
        create_pipeline(),
        {
            "image_importance": chain.image_importance,
            "domain_knowledge": chain.domain_knowledge,
            "classes": chain.classes,
            "validation_choice": chain.validation_choice,
            "params:mapping": params_for("mapping"),
        },
    )


def test_run_returns_every_output(outputs):
    assert set(outputs) == OUTPUTS


def test_run_equals_the_direct_node_calls(outputs, chain):
    assert outputs["predicted_importance"].equals(chain.predicted_importance)
    assert outputs["mapper_report"] == chain.mapper_report
    for name in ("mapper_weights", "inverse_map_weights"):
        expected = getattr(chain, name)
        assert outputs[name].keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(outputs[name][key], value), f"{name}.{key}"

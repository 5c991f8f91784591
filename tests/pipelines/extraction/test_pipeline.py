"""The extraction pipeline run by SequentialRunner on an in-memory catalog."""

from __future__ import annotations

import pytest
import torch

from niwt_pipeline.pipelines.extraction.pipeline import create_pipeline

INPUTS = {"backbone_weights", "backbone_spec", "images", "params:extraction"}
OUTPUTS = {"image_outputs"}


def test_pipeline_contract():
    pipeline = create_pipeline()

    assert pipeline.inputs() == INPUTS
    assert pipeline.outputs() == pipeline.all_outputs() == OUTPUTS
    assert [n.name for n in pipeline.nodes] == ["extract_image_outputs"]


@pytest.fixture(scope="module")
def outputs(run_pipeline, chain, params_for):
    return run_pipeline(
        create_pipeline(),
        {
            "backbone_weights": chain.backbone_weights,
            "backbone_spec": chain.backbone_spec,
            "images": chain.images,
            "params:extraction": params_for("extraction"),
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

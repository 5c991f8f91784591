"""The importance pipeline run by SequentialRunner on an in-memory catalog."""

from __future__ import annotations

import pandas as pd
import pytest

from niwt_pipeline.pipelines.importance.pipeline import create_pipeline

INPUTS = {"image_outputs", "images"}
OUTPUTS = {"image_importance", "class_importance"}


def test_pipeline_contract():
    pipeline = create_pipeline()

    assert pipeline.inputs() == INPUTS
    assert pipeline.outputs() == pipeline.all_outputs() == OUTPUTS
    assert [n.name for n in pipeline.nodes] == ["build_importance_tables"]


@pytest.fixture(scope="module")
def outputs(run_pipeline, chain):
    return run_pipeline(
        create_pipeline(), {"image_outputs": chain.image_outputs, "images": chain.images}
    )


def test_run_builds_both_tables(outputs, chain):
    assert set(outputs) == OUTPUTS
    pd.testing.assert_frame_equal(outputs["image_importance"], chain.image_importance)
    pd.testing.assert_frame_equal(outputs["class_importance"], chain.class_importance)
    assert outputs["class_importance"]["n_images"].sum() == len(outputs["image_importance"])

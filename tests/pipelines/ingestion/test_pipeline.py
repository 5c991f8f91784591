"""The ingestion pipeline run by SequentialRunner on an in-memory catalog."""

from __future__ import annotations

import pandas as pd
import pytest

from niwt_pipeline.pipelines.ingestion.pipeline import create_pipeline

INPUTS = {"raw_source", "domain_knowledge_source", "params:ingestion"}
OUTPUTS = {"images", "classes", "domain_knowledge", "image_attributes", "ingestion_summary"}
INTERMEDIATES = {"raw_domain_knowledge", "domain_knowledge_info"}


def test_pipeline_contract():
    pipeline = create_pipeline()

    assert pipeline.inputs() == INPUTS
    assert pipeline.outputs() == OUTPUTS
    assert pipeline.all_outputs() == OUTPUTS | INTERMEDIATES
    assert {n.name for n in pipeline.nodes} == {"build_domain_knowledge", "canonicalise_dataset"}


@pytest.fixture(scope="module")
def outputs(run_pipeline, raw_world, domain_source, params_for):
    return run_pipeline(
        create_pipeline(),
        {
            "raw_source": raw_world,
            "domain_knowledge_source": domain_source,
            "params:ingestion": params_for("ingestion"),
        },
    )


def test_run_produces_the_canonical_tables(outputs, chain):
    assert set(outputs) == OUTPUTS | INTERMEDIATES
    pd.testing.assert_frame_equal(outputs["raw_domain_knowledge"], chain.raw_domain_knowledge)
    assert outputs["domain_knowledge_info"] == chain.domain_knowledge_info
    for name in ("images", "classes", "domain_knowledge", "image_attributes"):
        pd.testing.assert_frame_equal(outputs[name], getattr(chain, name), obj=name)
    assert outputs["ingestion_summary"] == chain.ingestion_summary


def test_run_with_a_class_list_narrows_every_table(
    run_pipeline, raw_world, domain_source, params_for
):
    names = raw_world.classes["class_name"].tolist()
    wanted = names[:3] + names[3:5]

    outputs = run_pipeline(
        create_pipeline(),
        {
            "raw_source": raw_world,
            "domain_knowledge_source": domain_source,
            "params:ingestion": params_for("ingestion", {"classes": wanted}),
        },
    )

    assert outputs["classes"]["name"].tolist() == wanted
    assert outputs["domain_knowledge"]["name"].tolist() == wanted
    assert set(outputs["images"]["class_id"]) == set(range(len(wanted)))
    assert set(outputs["image_attributes"]["image_id"]) == set(outputs["images"]["image_id"])
    assert outputs["ingestion_summary"]["n_classes"] == len(wanted)
